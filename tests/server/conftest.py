"""A real server over loopback HTTP for the server tests, plus helpers to build releases."""

from __future__ import annotations

import hashlib
import itertools
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer, run_server

_apps = itertools.count()


@pytest.fixture(scope="package")
def server() -> Iterator[RunningServer]:
    with run_server() as running:
        yield running


@pytest.fixture(scope="package")
def admin(server: RunningServer) -> Iterator[AdminClient]:
    with AdminClient(server.url, server.admin_key) as client:
        yield client


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
def app_id(admin: AdminClient) -> str:
    """A fresh app for each test (the package shares one server)."""
    name = f"com.test.app{next(_apps)}"
    admin.create_app(name)
    return name


def make_zip(folder: Path, version: str) -> tuple[Path, str]:
    """A small bundle zip; returns (path, sha256 hex)."""
    path = folder / f"{version}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("index.html", f"<html>{version}</html>")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def add_bundle(admin: AdminClient, app_id: str, version: str, folder: Path, **extra: Any) -> str:
    """Upload a plain bundle; returns its checksum."""
    path, checksum = make_zip(folder, version)
    admin.upload_bundle(app_id, version, zip_path=path, checksum=checksum, **extra)
    return checksum


def device(app_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid update-check body of a current (8.x) plugin on builtin 1.0.0."""
    body: dict[str, Any] = {
        "app_id": app_id,
        "device_id": str(uuid.uuid4()),
        "platform": "android",
        "version_name": "builtin",
        "version_build": "1.0.0",
        "version_code": "1",
        "version_os": "14",
        "plugin_version": "8.51.14",
        "is_emulator": False,
        "is_prod": True,
        "defaultChannel": "",
    }
    body.update(overrides)
    return body

"""The port factories and the process-wide SSL context."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from loopback_http import make_certs

from agent.drivers.backends import make_async_port, make_sync_port
from agent.drivers.http import shared_ssl_context, ssl_context_for


def test_one_ssl_context_per_process_and_ca_file(tmp_path: Path) -> None:
    ca_path, _ = make_certs(tmp_path)
    assert shared_ssl_context() is shared_ssl_context() is ssl_context_for(True)
    custom = ssl_context_for(str(ca_path))
    assert custom is shared_ssl_context(str(ca_path)) and custom is not shared_ssl_context()
    assert custom.verify_mode == ssl.CERT_REQUIRED and custom.check_hostname
    assert ssl_context_for(False).verify_mode == ssl.CERT_NONE


def test_missing_ca_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_async_port(verify=str(tmp_path / "absent.pem"))


def test_factories_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown async"):
        make_async_port("requests")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown sync"):
        make_sync_port("requests")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_connections"):
        make_sync_port("httpx", max_connections=0)

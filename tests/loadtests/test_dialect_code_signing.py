"""Locust users of Expo and CodePush run with code signing when given the app's trust material
(`--code-signing DIALECT=FILE`): the signed release is installed with the right certificate or
key, refused by every device with another one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from locust_run import VERSION, device_versions, locust

from loadtests.settings import code_signing
from simulator.app import make_dist
from simulator.publish import DIALECT_TRUST, publish
from simulator.release import create_keys
from simulator.scenario import Release
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer, run_server

APP = "com.example.signed"
USERS = 5


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    """The server with APP's release signed for every dialect; the folder holding each
    dialect's trust material, right (`<dialect>-right.pem`) and from another key (`-wrong`)."""
    work = tmp_path_factory.mktemp("signed")
    right, _ = create_keys()
    wrong, _ = create_keys()
    for name, derive in DIALECT_TRUST.items():
        (work / f"{name}-right.pem").write_text(derive(right))
        (work / f"{name}-wrong.pem").write_text(derive(wrong))
    dist = make_dist(Release(VERSION, size_kb=16), work / "dist", seed=3)
    with run_server(work / "server") as server:
        with AdminClient(server.url, server.admin_key) as admin:
            publish(admin, app_id=APP, version=VERSION, channel="production", source=dist,
                    private_pem=right, dialects=("expo", "codepush"))  # fmt: skip
        yield server, work


@pytest.mark.parametrize(
    ("dialect", "trust"), [("expo", "right"), ("expo", "wrong"), ("codepush", "wrong")]
)
def test_dialect_users_verify_the_signature(
    signed: tuple[RunningServer, Path], tmp_path: Path, dialect: str, trust: str
) -> None:
    server, work = signed
    devices = tmp_path / "devices"
    done = locust([
        # the right key gets longer: every user must have checked, downloaded and restarted
        # even on a loaded machine (a wrong key installs nothing however long it runs)
        "--headless", "-u", str(USERS), "-r", str(USERS), "-t", "15s" if trust == "right" else "8s",
        "--host", server.url, "--app-id", APP, "--dialect", dialect,
        "--code-signing", f"{dialect}={work / f'{dialect}-{trust}.pem'}",
        "--device-root", str(devices), "--csv", str(tmp_path / "run"),
    ])  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-4000:]
    _, versions, _ = device_versions(devices)
    assert len(versions) == USERS
    installed = versions.count(VERSION)
    assert installed >= USERS - 1 if trust == "right" else installed == 0, versions


def test_code_signing_option_is_checked(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text(DIALECT_TRUST["expo"](create_keys()[0]))
    assert code_signing(f"expo={cert}") == {"expo": cert.read_text()}
    assert code_signing("") == {}
    for text, problem in [
        (f"codepush={cert}", "--code-signing codepush: not a PEM public key"),
        (f"capgo={cert}", "Capgo's key is --public-key"),
        (f"expo={cert},expo={cert}", "is not DIALECT=FILE (once per dialect)"),
        ("expo", "is not DIALECT=FILE"),
        (f"nope={cert}", "--code-signing nope:"),
    ]:
        with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            code_signing(text)

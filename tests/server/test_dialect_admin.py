"""One admin model for every dialect: a bundle carries other dialects' artefacts, each checked
by its dialect's server module; a name no dialect takes is refused before anything is stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.server.client import AdminClient, AdminError

from .conftest import make_zip


def test_artefacts_for_an_unknown_dialect_are_refused(
    admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    path, checksum = make_zip(tmp_path, "1.0.1")
    for name in ("nope", "capgo"):  # capgo's artefacts are the bundle's own fields
        with pytest.raises(AdminError, match=f"dialects: '{name}' takes no artefacts"):
            admin.upload_bundle(
                app_id, "1.0.1", zip_path=path, checksum=checksum, dialects={name: {}}
            )
    assert admin.bundles(app_id) == []
    admin.upload_bundle(app_id, "1.0.1", zip_path=path, checksum=checksum)
    assert [b["dialects"] for b in admin.bundles(app_id)] == [[]]

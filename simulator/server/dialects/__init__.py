"""The device endpoints of every dialect the reference server speaks, by name.

Each dialect is a `ServerDialect`: its routes (mounted beside the others, over the same apps,
channels, rollouts and rollbacks: the one admin model) and the check of the artefacts its
publish step stores with a bundle (`Bundle.dialects[name]`, uploaded with the bundle by
`otasim publish --dialect NAME`). A dialect's check route builds the Capgo-shaped
`validation.DeviceInfo` from its own request and calls `device_api.check`, so every decision
(channel, rollout draw, policy, rollback) is the one Capgo devices get; it then answers in its
own shape. Adding a dialect is one module here and one line in `SERVER_DIALECTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.routing import Route

from simulator.server import channel_self, device_api
from simulator.server.dialects import appflow, capawesome, codepush, expo

Artefacts = Callable[[Any], tuple[dict[str, Any], list[str]]]
"""Validate what a publish step stored for a dialect: (the clean data, the blob ids it names).
Raises `ValueError` with a one-line reason."""


@dataclass(frozen=True)
class ServerDialect:
    name: str
    routes: Callable[[], list[Route]]
    artefacts: Artefacts | None = None  # None: the dialect needs nothing beyond Capgo's own
    # checks a private key (PEM) the server may sign this dialect's answers with (ValueError:
    # unusable); None: the dialect's answers are signed at publish time only
    signing_key: Callable[[bytes], object] | None = None


def _capgo_routes() -> list[Route]:
    return [
        Route("/updates", device_api.updates, methods=["POST"]),
        Route("/updates", device_api.health, methods=["GET"]),
        Route("/stats", device_api.stats, methods=["POST"]),
        Route("/stats", device_api.health, methods=["GET"]),
        Route("/channel_self", channel_self.post, methods=["POST"]),
        Route("/channel_self", channel_self.put, methods=["PUT"]),
        Route("/channel_self", channel_self.delete, methods=["DELETE"]),
        Route("/channel_self", channel_self.list_channels, methods=["GET"]),
    ]


SERVER_DIALECTS: dict[str, ServerDialect] = {
    d.name: d
    for d in (
        ServerDialect("capgo", _capgo_routes),
        ServerDialect("expo", expo.routes, expo.artefacts, expo.signing_key),
        ServerDialect("codepush", codepush.routes, codepush.artefacts),
        ServerDialect(capawesome.NAME, capawesome.routes, capawesome.artefacts),
        ServerDialect(appflow.NAME, appflow.routes, appflow.artefacts),
    )
}

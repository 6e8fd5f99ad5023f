"""Anti-rollback that no unauthenticated label can poison (docs/agent.md has the threat model).

What a Capgo answer authenticates depends on the mode:

- **plain Capgo** (no public key; TLS only): nothing in the answer is signed. The content
  identity of an offer is the checksum the server states.
- **Capgo v2** (a public key): the checksum is signed (an RSA block over the SHA-256 of the
  bundle) and the session key too, but the *version label* is not. The content identity is the
  digest recovered from the signature, so no re-encoding of the checksum field changes it.
- **strict signed release metadata** (`AgentConfig.strict_release`, `agent.security.release`):
  the version is signed together with the content. Only then may a version *label* bind the
  device: the floor (raised only from versions confirmed in that mode) refuses every older
  offer, checked in `refusal()` below -- the one place every offer passes.

In the two Capgo modes the label is unauthenticated, so it never decides on its own whether
new content is refused (a label raised by a man in the middle would lock the device out of
every genuine release below it). What the device does remember is *content*: the identity of
every bundle whose boot it confirmed, and the label it was confirmed under. An offer of content
already confirmed here is refused when it comes under another label (`relabelled_content`: a
replay dressed up as a new version) or when its label is older than a version confirmed here
(`downgrade_refused`: a replay of an old release, or the server's channel rolled back past
it). Content the device never confirmed is taken whatever its label, so a genuine release
published after an attack always gets in once the network is clean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from agent.core.versions import is_downgrade
from agent.protocol.base import UpdateOffer

MAX_CONFIRMED_CONTENT = 64
"""Content identities remembered (newest kept): a replay of older content than the 64th last
confirmed release falls back to being judged as unseen content."""


@dataclass(frozen=True)
class Refusal:
    """Why an offer is refused: `error` is the check's error code and the stats `reason`."""

    error: str  # "downgrade_refused" | "relabelled_content"
    message: str
    metadata: Mapping[str, str]


def plain_content_id(offer: UpdateOffer) -> str | None:
    """The content identity of an offer when no key is configured: its checksum's hex,
    lower-cased (a signature names nothing a device without the key can check); for an offer
    that is only a file list (Appflow), `files:` and the SHA-256 of its sorted `name:hash`
    lines, so the same files under any URLs are the same content."""
    checksum = offer.checksum
    if checksum:
        return checksum.strip().lower() or None
    if offer.manifest:
        lines = sorted(f"{e.file_name}:{e.file_hash.lower()}" for e in offer.manifest)
        return "files:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return None


def remember(confirmed: Mapping[str, str], content: str, version: str) -> dict[str, str]:
    """`confirmed` after `content` confirmed a boot as `version` (the oldest entries dropped)."""
    kept = {k: v for k, v in confirmed.items() if k != content}
    kept[content] = version
    return dict(list(kept.items())[-MAX_CONFIRMED_CONTENT:])


def refusal(
    version: str,
    content: str | None,
    confirmed: Mapping[str, str],
    floor: str | None,
    *,
    authenticated: bool = False,
) -> Refusal | None:
    """Whether an offer of `content` labelled `version` is refused as a rollback.

    `confirmed` maps the content identities confirmed here to their labels; `floor` is the
    highest label confirmed here (unauthenticated in Capgo modes: it only judges content
    confirmed here, never unseen content). `authenticated` (strict mode: the label is signed
    with the content in the release document) makes the floor refuse any older version.
    """
    seen_as = confirmed.get(content) if content else None
    if seen_as is None:
        if authenticated and floor is not None and is_downgrade(version, floor):
            return _downgrade(version, floor)
        return None
    if seen_as != version:
        return Refusal(
            "relabelled_content",
            f"this content was confirmed here as {seen_as}; offered again as {version}",
            {"reason": "relabelled_content", "confirmed_as": seen_as},
        )
    if floor is not None and is_downgrade(version, floor):
        return _downgrade(version, floor)
    return None


def _downgrade(version: str, floor: str) -> Refusal:
    return Refusal(
        "downgrade_refused",
        f"{version} is older than {floor}, already confirmed on this device",
        {"reason": "downgrade_refused", "highest_confirmed": floor},
    )

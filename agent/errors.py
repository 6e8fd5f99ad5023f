"""The agent's exception tree: one root, branches that tell the caller what to do.

- `VerificationError`: the artefact is bad (checksum, signature, decryption, unsafe zip).
  Never retry the same artefact. `action` is the Capgo stats action a device reports.
- `TransportError`: the network or the server failed to deliver. Retry with backoff
  (`RateLimited` carries the server's hint).
- `ProtocolError`: the server answered something this dialect cannot parse. Retry later;
  the answer is reported, never trusted.
- `LocalError`: the device itself failed (disk full, swap failed). `action` as above.

Library exceptions (httpx, aiohttp, OSError from sockets) are translated to these only in
`agent.drivers`. API misuse raises `ValueError` / `RuntimeError`, not these.
"""

from __future__ import annotations

import errno

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class VerificationError(AgentError):
    """The artefact failed verification; never retry it.

    `action` is the Capgo stats action (`checksum_fail`, `decrypt_fail`, `checksum_required`,
    `unzip_fail`, `windows_path_fail`, `canonical_path_fail`, `directory_path_fail`, ...).
    """

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"{action}: {reason}")
        self.action = action
        self.reason = reason


class TransportError(AgentError):
    """The request did not complete (connect, timeout, reset, truncated body, 5xx); retry."""


class RateLimited(TransportError):
    """HTTP 429. `retry_after_s` is the server's hint (None when it gave none)."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DownloadStopped(TransportError):
    """The download cannot go on now (deadline, stall, refused URL); not retried in this
    attempt run. The partial download stays and resumes at the next offer of the artefact.
    """


class ProtocolError(AgentError):
    """The server's answer is malformed or unknown for this dialect."""


class LocalError(AgentError):
    """The device failed locally (disk, swap). `action` is the Capgo stats action if any."""

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"{action}: {reason}")
        self.action = action
        self.reason = reason

    @classmethod
    def from_os_error(cls, exc: OSError, action: str, what: str) -> LocalError:
        """`action`, or `insufficient_disk_space` when the disk (or the quota) is full."""
        if exc.errno in NO_SPACE:
            return cls("insufficient_disk_space", f"disk full while {what}: {exc}")
        return cls(action, f"cannot {what}: {exc}")

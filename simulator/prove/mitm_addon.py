"""The man in the middle's script: loaded by `mitmdump -s` (mitmproxy's own Python, in its own
venv), never imported by otasim. Standard library and mitmproxy only.

mitmdump runs as a reverse proxy in front of the genuine server; the device talks to it (plain
HTTP, or TLS with mitmproxy's own CA certificate). The prove harness steers the attacker with
requests to CONTROL on the proxy itself, which are answered here and never forwarded:

- `POST CONTROL {"mode": ..., "seed": N, ...}` sets the attack for the next requests and forgets
  what was changed (answers the previous report);
- `GET CONTROL` answers the report: every change made (path, what, SHA-256 of the genuine and
  the served bytes), the requests seen per scheme, and the versions of the answers recorded.

Every `/updates` answer that offers a release is recorded by version (what a passive attacker
on the path keeps), whatever the mode. Modes:

- `pass`: forward untouched;
- `flip`: flip 1..8 bits of each bundle or delta file body (`bundle_prefixes`);
- `truncate`: cut each bundle body to a random shorter length (Content-Length follows);
- `strip-key`: remove `session_key` from offers; `swap-key`: replace it with `session_key`;
- `replay`: answer `/updates` with the recorded answer of `version` (relabelled to `label`
  when given: a downgrade dressed up as an upgrade), the genuine server never asked;
- `to-http`: answer `/updates` with a redirect to `target` (an http:// URL);
- `http-url`: rewrite an offer's bundle URL to http://.

Whatever the dialect (`otasim prove --dialects`, simulator/prove/dialects.py): a device's first
request of an app start is its update check, and files are served under `bundle_prefixes`:

- `record`: keep the first answer to a request for no file whole (path, status, headers, body)
  as `name`;
- `replay-as`: answer requests to that path with the answer kept as `name`, the genuine server
  never asked;
- `reroute`: send every request to the attacker's own server on 127.0.0.1:`port`.

With `secret`, every body passed on (raw, or the files of a zip) is searched for it: the report's
`plaintext` counts the bodies where the attacker read it, `bodies` the bodies passed on.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from typing import Any

from mitmproxy import http

CONTROL = "/__attacker__"
BUNDLE_PREFIXES = ("/bundle", "/files/")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Attacker:
    def __init__(self) -> None:
        self._reset({"mode": "pass"})
        self.recorded: dict[str, bytes] = {}
        self.answers: dict[str, tuple[str, int, list[tuple[bytes, bytes]], bytes]] = {}

    def _reset(self, params: dict[str, Any]) -> None:
        self.params = params
        self.mode = str(params["mode"])
        self.rng = random.Random(params.get("seed", 0))
        self.changes: list[dict[str, Any]] = []
        self.seen = {"http": 0, "https": 0}
        self.read = {"bodies": 0, "plaintext": 0}

    def _report(self) -> bytes:
        report = {
            "mode": self.mode,
            "changes": self.changes,
            "seen": self.seen,
            "read": self.read,
            "recorded": sorted(self.recorded),
            "recorded_answers": sorted(self.answers),
        }
        return json.dumps(report).encode()

    def _changed(self, flow: http.HTTPFlow, what: str, before: bytes, after: bytes) -> None:
        path = flow.request.path.split("?", 1)[0]
        self.changes.append(
            {"path": path, "what": what, "genuine": _sha(before), "served": _sha(after)}
        )

    def request(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path.split("?", 1)[0]
        if path == CONTROL:
            answer = self._report()
            if flow.request.method == "POST":
                self._reset(json.loads(flow.request.content or b"{}"))
            flow.response = http.Response.make(200, answer, {"Content-Type": "application/json"})
            flow.metadata["forged"] = True
            return
        self.seen["https" if flow.client_conn.tls_established else "http"] += 1
        if flow.client_conn.tls_established:  # the server's URLs keep the device's scheme
            flow.request.headers["X-Forwarded-Proto"] = "https"
        if self.mode == "reroute":
            host = flow.request.host_header  # kept: the server's URLs name the proxy
            flow.request.scheme = "http"
            flow.request.host, flow.request.port = "127.0.0.1", int(self.params["port"])
            flow.request.host_header = host
            self._changed(flow, "rerouted", b"", str(self.params["port"]).encode())
            return
        kept = self.answers.get(str(self.params.get("name")))
        if self.mode == "replay-as" and kept is not None and path == kept[0]:
            _, status, headers, body = kept
            flow.response = http.Response.make(status, body, headers)
            flow.metadata["forged"] = True
            self._changed(flow, "replayed " + str(self.params["name"]), b"", body)
            return
        if path != "/updates":
            return
        if self.mode == "to-http":
            target = str(self.params["target"])
            flow.response = http.Response.make(302, b"", {"Location": target})
            flow.metadata["forged"] = True
            self._changed(flow, "redirect to " + target, b"", target.encode())
        elif self.mode == "replay" and self.params["version"] in self.recorded:
            recorded = self.recorded[self.params["version"]]
            served = recorded
            if self.params.get("label"):
                served = json.dumps(json.loads(recorded) | {"version": self.params["label"]})
                served = served.encode()
            headers = {"Content-Type": "application/json"}
            flow.response = http.Response.make(200, served, headers)
            flow.metadata["forged"] = True
            self._changed(flow, "replayed " + self.params["version"], b"", served)

    def response(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path.split("?", 1)[0]
        if flow.metadata.get("forged") or flow.response is None:
            return
        body = flow.response.content or b""
        if self.params.get("secret"):
            self._read(body, str(self.params["secret"]).encode())
        prefixes = tuple(self.params.get("bundle_prefixes", BUNDLE_PREFIXES))
        if self.mode == "record" and not path.startswith(prefixes):
            kept = (path, flow.response.status_code, list(flow.response.headers.fields), body)
            self.answers.setdefault(str(self.params["name"]), kept)
        if path == "/updates":
            self._answer(flow, body)
        elif path.startswith(prefixes):
            self._bundle(flow, body)

    def _answer(self, flow: http.HTTPFlow, body: bytes) -> None:
        try:
            answer = json.loads(body)
        except ValueError:
            return
        if not isinstance(answer, dict) or "url" not in answer:
            return
        self.recorded.setdefault(str(answer.get("version")), body)
        served = dict(answer)
        if self.mode == "strip-key":
            served.pop("session_key", None)
        elif self.mode == "swap-key":
            served["session_key"] = self.params["session_key"]
        elif self.mode == "http-url":
            served["url"] = "http://" + str(answer["url"]).split("://", 1)[-1]
        if served != answer:
            flow.response.content = json.dumps(served).encode()
            self._changed(flow, self.mode, body, flow.response.content)

    def _read(self, body: bytes, secret: bytes) -> None:
        """What a passive attacker reads: the body as it passed, or the files of a zip."""
        self.read["bodies"] += 1
        texts = [body]
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                texts += [archive.read(name) for name in archive.namelist()]
        except (zipfile.BadZipFile, ValueError, OSError, RuntimeError):
            pass
        self.read["plaintext"] += any(secret in text for text in texts)

    def _bundle(self, flow: http.HTTPFlow, body: bytes) -> None:
        if not body or self.mode not in ("flip", "truncate"):
            return
        if self.mode == "flip":
            out = bytearray(body)
            for spot in self.rng.sample(range(len(out) * 8), min(self.rng.randint(1, 8), 64)):
                out[spot // 8] ^= 1 << (spot % 8)
            served = bytes(out)
        else:
            served = body[: self.rng.randrange(len(body))]
        flow.response.content = served
        self._changed(flow, self.mode, body, served)


addons = [Attacker()]

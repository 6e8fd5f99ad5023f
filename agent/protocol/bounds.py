"""The one parsing boundary every dialect shares: hostile answers become `ProtocolError`.

A server (or a man in the middle) controls every byte of an answer, so before a dialect looks
at a field, `load_json` bounds the body: its size, its nesting depth (Python's decoder recurses
and raises `RecursionError` on 100 000 nested brackets; anything deeper than `MAX_DEPTH` is
refused too), and its text (a JSON string may carry a
lone UTF-16 surrogate, `"\\ud800"`, which no file or terminal can encode). Labels the device
stores and prints (versions) and URLs it will fetch are checked by `check_label` and
`url_problem`, which never raise anything but `ProtocolError` (or nothing at all).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from typing import Any, Final
from urllib.parse import urlsplit

from agent.errors import ProtocolError

MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024
"""The largest answer a dialect parses (the HTTP port's own `send` cap)."""
MAX_DEPTH: Final = 32
"""Capgo answers nest 3 deep (an offer's manifest of objects); 32 leaves room for any dialect."""
MAX_URL_CHARS: Final = 8192
"""Signed CDN URLs run to ~2 KiB; servers and proxies commonly refuse more than 8 KiB."""
MAX_LABEL_CHARS: Final = 256

_MAY_HOLD_SURROGATE: Final = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
"""An escaped surrogate (`\\udXXX`), or one encoded raw (json decodes with surrogatepass)."""


def _deeper_than(data: Any, max_depth: int) -> bool:
    """True when arrays and objects in `data` nest deeper than `max_depth` (iterative)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > max_depth:
            return True
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _check_text(data: Any) -> None:
    """Raise ProtocolError when a string (or key) anywhere in `data` is not valid Unicode."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise ProtocolError("answer carries a lone UTF-16 surrogate") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def load_json(body: bytes, *, max_bytes: int = MAX_ANSWER_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Decode an answer body, bounded in size, depth and text.

    Raises:
        ProtocolError: larger than `max_bytes`, nested deeper than `max_depth`, not JSON, or
            carrying a string that is not valid Unicode.
    """
    if len(body) > max_bytes:
        raise ProtocolError(f"answer is {len(body)} bytes, over {max_bytes}")
    too_deep = ProtocolError(f"answer nests deeper than {max_depth}")
    try:
        data = json.loads(body)  # its C decoder stops at Python's recursion limit
    except RecursionError:
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"answer is not JSON: {exc}") from None
    openers = body.count(b"[") + body.count(b"{")
    if openers > max_depth and isinstance(data, dict | list) and _deeper_than(data, max_depth):
        raise too_deep
    if (b"\\u" in body or b"\xed" in body) and _MAY_HOLD_SURROGATE.search(body):
        _check_text(data)
    return data


def load_json_lenient(body: bytes) -> Any:
    """`load_json` for bodies that are only hints (error answers): None when unusable."""
    if not body:
        return None
    try:
        return load_json(body)
    except ProtocolError:
        return None


def label_problem(value: str) -> str | None:
    """Why `value` cannot be a label the device stores and prints (a version): never raises."""
    if not value or len(value) > MAX_LABEL_CHARS:
        return f"must be 1 to {MAX_LABEL_CHARS} characters"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in value):
        return f"{value!r} carries control characters"
    return None


def check_label(value: str, field: str) -> str:
    """`value`, when it is a usable label (see `label_problem`).

    Raises:
        ProtocolError: it is not.
    """
    problem = label_problem(value)
    if problem:
        raise ProtocolError(f"{field} {problem}")
    return value


@functools.lru_cache(maxsize=1024)  # a fleet asks about the same few URLs per request
def url_problem(url: str) -> str | None:
    """Why `url` cannot be fetched (None when it can): never raises.

    An http(s) URL with a host, a valid port, at most MAX_URL_CHARS and no whitespace or
    control characters.
    """
    if len(url) > MAX_URL_CHARS:
        return f"URL is {len(url)} characters, over {MAX_URL_CHARS}"
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return "URL carries whitespace or control characters"
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        return f"malformed URL: {exc}"
    if parts.scheme not in ("http", "https") or not host:
        return f"not an http(s) URL with a host: {url[:80]!r}"
    return None

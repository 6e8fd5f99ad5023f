"""A strict, bounded reader of `multipart/mixed` bodies (RFC 2046), for dialect answers.

Each part keeps its exact body bytes (a signature covers them byte for byte) and its headers,
names lower-cased; a header sent twice keeps its first value (servers that repeat
`content-type` are known and harmless). `part_name` reads the `name` parameter of the part's
`content-disposition`, whether the server wrote `inline` (the Expo protocol) or `form-data` (a
known variation). Anything else malformed is a `ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Final

from agent.errors import ProtocolError

MAX_PARTS: Final = 16
MAX_HEADER_LINES: Final = 32
CRLF: Final = b"\r\n"


@dataclass(frozen=True)
class Part:
    headers: Mapping[str, str]
    body: bytes


def header_param(value: str, name: str) -> str | None:
    """The parameter `name` of a header value such as `multipart/mixed; boundary="x"`."""
    message = Message()
    message["x"] = value
    param = message.get_param(name, header="x")
    return param if isinstance(param, str) else None


def boundary_of(content_type: str) -> str | None:
    """The boundary of a `multipart/mixed` content type; None for any other type.

    Raises:
        ProtocolError: a multipart type without a usable boundary (1 to 70 characters).
    """
    if content_type.split(";", 1)[0].strip().lower() != "multipart/mixed":
        return None
    boundary = header_param(content_type, "boundary")
    if not boundary or len(boundary) > 70 or not boundary.isascii():
        raise ProtocolError("multipart answer without a usable boundary")
    return boundary


def part_name(part: Part) -> str | None:
    """The `name` of a part's content-disposition (`inline` or `form-data`), if any."""
    disposition = part.headers.get("content-disposition", "")
    if disposition.split(";", 1)[0].strip().lower() not in ("inline", "form-data"):
        return None
    return header_param(disposition, "name")


def parse_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body (zero parts is a valid answer).

    Raises:
        ProtocolError: no opening or closing delimiter, too many parts, bad part headers.
    """
    delimiter = b"--" + boundary.encode("ascii")
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != CRLF):
        raise ProtocolError("multipart answer has no opening boundary")
    position = start + len(delimiter)
    parts: list[Part] = []
    while body[position : position + 2] != b"--":
        line_end = body.find(CRLF, position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise ProtocolError("multipart boundary line is malformed")
        following = body.find(CRLF + delimiter, line_end)
        if following < 0:
            raise ProtocolError("multipart answer is not closed")
        if len(parts) == MAX_PARTS:
            raise ProtocolError(f"multipart answer has more than {MAX_PARTS} parts")
        parts.append(_part(body[line_end + 2 : following]))
        position = following + 2 + len(delimiter)
    return parts


def _part(raw: bytes) -> Part:
    if raw.startswith(CRLF):
        return Part({}, raw[2:])
    end = raw.find(CRLF + CRLF)
    if end < 0:
        raise ProtocolError("multipart part has no end of headers")
    lines = raw[:end].split(CRLF)
    if len(lines) > MAX_HEADER_LINES:
        raise ProtocolError("multipart part has too many headers")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name.strip() or not line.isascii():
            raise ProtocolError("multipart part header is malformed")
        headers.setdefault(name.strip().decode().lower(), value.strip().decode())
    return Part(headers, raw[end + 4 :])

"""The opening handshake (RFC 6455 §4), as plain functions without I/O.

The server side turns a parsed :class:`~common.http11.Request` into the
headers of a ``101 Switching Protocols`` answer, or raises an
:class:`~common.exceptions.InvalidHandshake` that says which HTTP status to
answer instead. The client side builds the request and checks the answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Collection, Sequence
from http import HTTPStatus
from typing import Union

from .exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidHost,
    InvalidOrigin,
    InvalidStatus,
    InvalidUpgrade,
    NegotiationError,
)
from .http11 import Headers, Request, Response

__all__ = [
    "GUID",
    "accept_key",
    "generate_key",
    "check_request",
    "check_origin",
    "Origins",
    "Hosts",
    "check_host",
    "host_name",
    "select_subprotocol",
    "build_request",
    "check_response",
]

#: The magic string of RFC 6455 §1.3, appended to the key before hashing.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# What every 426 says: RFC 9110 §15.5.22, a 426 MUST send Upgrade; §7.8, a
# sender of Upgrade MUST also send the "upgrade" connection option (which
# error_response joins to "close" in one Connection header); RFC 6455 §4.4,
# the versions this server speaks.
_UPGRADE_HEADERS = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")]


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (§1.3, §4.2.2).

    >>> accept_key("dGhlIHNhbXBsZSBub25jZQ==")
    's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """A fresh random ``Sec-WebSocket-Key``: 16 random bytes in base64 (§4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _single(headers: Headers, name: str, error: type[InvalidHandshake] = InvalidHeader) -> str:
    values = headers.get_all(name)
    if not values:
        raise error(f"missing {name} header")
    if len(values) > 1:
        raise error(f"more than one {name} header")
    return values[0]


def check_request(request: Request) -> str:
    """Validate a WebSocket upgrade request; return its key (§4.2.1).

    Raises :class:`InvalidHandshake` with 405 for a method other than GET,
    :class:`InvalidUpgrade` (426) when this is not a WebSocket request at all
    or asks for another protocol version, and :class:`InvalidHeader` (400)
    when it is one but malformed.
    """
    headers = request.headers
    if request.method != "GET":
        raise InvalidHandshake(
            f"method {request.method} not allowed; a WebSocket handshake uses GET",
            HTTPStatus.METHOD_NOT_ALLOWED,
            [("Allow", "GET")],
        )
    if "websocket" not in headers.tokens("Upgrade"):
        raise InvalidUpgrade("this is a WebSocket endpoint: Upgrade: websocket required", headers=_UPGRADE_HEADERS)
    if "upgrade" not in headers.tokens("Connection"):
        raise InvalidUpgrade("Connection: Upgrade required", headers=_UPGRADE_HEADERS)
    # §4.1 sends no body, and what follows the head is read as frames: any
    # body, chunked or counted, would be taken for frames the client sent.
    # (Ambiguous framing headers never get here: parse_request refuses them.)
    if request.body_length != 0:
        raise InvalidHeader("a WebSocket handshake request has no body")
    _single(headers, "Host")
    version = headers.get_all("Sec-WebSocket-Version")
    if version != ["13"]:
        raise InvalidUpgrade(
            "unsupported or missing Sec-WebSocket-Version; this server speaks version 13", headers=_UPGRADE_HEADERS
        )
    key = _single(headers, "Sec-WebSocket-Key")
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidHeader("Sec-WebSocket-Key is not base64") from None
    if len(raw) != 16:
        raise InvalidHeader("Sec-WebSocket-Key must encode 16 bytes")
    return key


#: The allowed origins: a list of values, or a function ``(origin, headers)
#: -> bool`` for a rule that depends on the request (see :func:`check_origin`).
Origins = Union[Sequence[Union[str, None]], Callable[[Union[str, None], Headers], bool]]


def check_origin(headers: Headers, origins: Origins | None) -> None:
    """Refuse a request whose ``Origin`` is not allowed (§10.2), with 403.

    ``origins`` None allows every origin. In a list, ``None`` stands for a
    request without an Origin header (scripts, command-line clients) and
    ``"null"`` for the opaque origin of a page opened from ``file://``.
    A function is called with the Origin (None when absent) and the request's
    headers, for rules a list cannot state, such as "pages served by this
    very server": ``origin == "http://" + headers["Host"]``.
    """
    if origins is None:
        return
    values = headers.get_all("Origin")
    if len(values) > 1:
        raise InvalidOrigin("more than one Origin header")
    origin = values[0] if values else None
    if not (origins(origin, headers) if callable(origins) else origin in origins):
        raise InvalidOrigin(f"origin {origin!r} is not allowed" if origin else "a request without Origin is not allowed")


#: The allowed hosts: a list of names, or a function ``(name, headers) ->
#: bool`` (see :func:`check_host`).
Hosts = Union[Collection[str], Callable[[str, Headers], bool]]

# A Host value (RFC 9110 §7.2, RFC 3986 §3.2.2): a name or IPv4 address, or
# an IPv6 address in brackets, then an optional port.
_HOST = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::[0-9]{1,5})?")


def host_name(value: str) -> str | None:
    """The name a ``Host`` value asks for, without port, brackets, case or
    trailing dot: ``"Example.org.:80"`` is ``"example.org"``, ``"[::1]:5678"``
    is ``"::1"``. None when the value is not a host."""
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).lower().rstrip(".")


def check_host(headers: Headers, hosts: Hosts | None) -> None:
    """Refuse a request for a name that is not this server's, with 403.

    This defeats DNS rebinding: a web site that points its own name at this
    machine's address passes the browser's same-origin rule, yet its
    requests still carry its own name in ``Host``. ``hosts`` None accepts any
    name. A collection holds this server's names and addresses as
    :func:`host_name` gives them ("localhost", "192.168.1.20", "::1"; see
    :func:`common.server.local_names`); a function is called with the name
    and the request's headers. A request without exactly one valid Host
    header gets 400 (RFC 9112 §3.2).
    """
    if hosts is None:
        return
    name = host_name(_single(headers, "Host"))
    if name is None:
        raise InvalidHeader("malformed Host header")
    if not (hosts(name, headers) if callable(hosts) else name in hosts):
        raise InvalidHost(f"host {name!r} is not a name of this server")


def select_subprotocol(headers: Headers, supported: Sequence[str] | None) -> str | None:
    """The first of the server's ``supported`` subprotocols the client offered."""
    if not supported:
        return None
    offered = [t for v in headers.get_all("Sec-WebSocket-Protocol") for t in (s.strip() for s in v.split(",")) if t]
    for protocol in supported:
        if protocol in offered:
            return protocol
    return None


def build_request(
    host: str,
    path: str,
    key: str,
    *,
    origin: str | None = None,
    subprotocols: Sequence[str] | None = None,
    extensions: str | None = None,
    extra_headers: Sequence[tuple[str, str]] | dict[str, str] | None = None,
) -> bytes:
    """The client's opening request (§4.1)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    if extra_headers:
        items = extra_headers.items() if isinstance(extra_headers, dict) else extra_headers
        lines.extend(f"{name}: {value}" for name, value in items)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_response(
    response: Response, key: str, subprotocols: Sequence[str] | None = None
) -> str | None:
    """Validate the server's answer (§4.1, client side); return the subprotocol.

    Extensions are checked by the caller, which knows what it offered.
    """
    if response.status != 101:
        raise InvalidStatus(response.status, response.body)
    headers = response.headers
    if "websocket" not in headers.tokens("Upgrade"):
        raise InvalidUpgrade("server answer lacks Upgrade: websocket")
    if "upgrade" not in headers.tokens("Connection"):
        raise InvalidUpgrade("server answer lacks Connection: Upgrade")
    if _single(headers, "Sec-WebSocket-Accept") != accept_key(key):
        raise InvalidHeader("wrong Sec-WebSocket-Accept")
    protocols = headers.get_all("Sec-WebSocket-Protocol")
    if not protocols:
        return None
    if len(protocols) > 1 or protocols[0] not in (subprotocols or ()):
        raise NegotiationError(f"server chose a subprotocol we did not offer: {protocols}")
    return protocols[0]

"""The opening handshake (RFC 6455 §4), as plain functions without I/O.

The server side turns a parsed :class:`~common.http11.Request` into the
headers of a ``101 Switching Protocols`` answer (:func:`accept_request`), or
raises an :class:`~common.exceptions.InvalidHandshake` that says which HTTP
status to answer instead. The client side builds the request
(:func:`build_request`) and checks the answer (:func:`accept_response`).
Reading and writing the bytes is for :mod:`common.server` and
:mod:`common.client`; what happens here can be tested without a socket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Union

from . import deflate
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
    "Accept",
    "accept_request",
    "build_request",
    "check_response",
    "Agreement",
    "accept_response",
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


@dataclass(frozen=True)
class Accept:
    """The server's decision to open the connection (§4.2.2)."""

    #: The headers of the ``101 Switching Protocols`` answer, in order.
    headers: tuple[tuple[str, str], ...]
    #: The subprotocol agreed on, or None.
    subprotocol: str | None
    #: The permessage-deflate agreed on, or None for no compression.
    extension: deflate.PerMessageDeflate | None


def accept_request(
    request: Request,
    *,
    origins: Origins | None = None,
    subprotocols: Sequence[str] | None = None,
    compression: str | None = None,
) -> Accept:
    """Decide whether a request opens a WebSocket, and on what terms (§4.2).

    The checks run in this order, so the first defect names the status:
    :func:`check_request` (405, 426 or 400), :func:`check_origin` against
    ``origins`` (403), then the negotiations. :func:`select_subprotocol`
    picks from ``subprotocols`` (the server's, in order of preference) and
    never refuses; ``compression="deflate"`` answers the first acceptable
    permessage-deflate offer (RFC 7692), declines the others (§7), and
    refuses with 400 (:class:`NegotiationError`) only a header that breaks
    the grammar of RFC 6455 §9.1; None accepts no extension.
    The ``Host`` check (:func:`check_host`) and the application's chance to
    answer plain HTTP come before this, in :mod:`common.server`.

    Returns the :class:`Accept` to answer with; raises
    :class:`InvalidHandshake` with the status to answer instead.
    """
    key = check_request(request)
    check_origin(request.headers, origins)
    subprotocol = select_subprotocol(request.headers, subprotocols)
    # §4.2.2 /server response/: the 101 with Upgrade, Connection and the accept value.
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    extension = None
    if compression == "deflate":
        # Looked up on the module at each call, so that tests can set its parameters.
        agreed = deflate.server_negotiate(request.headers.get_all("Sec-WebSocket-Extensions"))
        if agreed is not None:
            header, extension = agreed
            headers.append(("Sec-WebSocket-Extensions", header))
    return Accept(tuple(headers), subprotocol, extension)


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


@dataclass(frozen=True)
class Agreement:
    """What the server's ``101`` agreed on, as the client checked it."""

    #: The subprotocol the server chose among those offered, or None.
    subprotocol: str | None
    #: The permessage-deflate the server accepted, or None for no compression.
    extension: deflate.PerMessageDeflate | None


def accept_response(
    response: Response,
    key: str,
    *,
    subprotocols: Sequence[str] | None = None,
    compression: str | None = None,
) -> Agreement:
    """Check the server's answer to the request sent with ``key`` (§4.1).

    ``subprotocols`` and ``compression`` are what the request offered:
    the server may choose only among them. ``compression="deflate"`` means
    :func:`common.deflate.client_offer` was sent; None means no extension
    was offered, so any answered extension is refused (§4.1: "the client
    MUST _Fail the WebSocket Connection_"). Raises :class:`InvalidStatus`
    when the answer is not 101 (quoting ``response.body``, which the caller
    may have read for that), another :class:`InvalidHandshake` when the 101
    is wrong.
    """
    subprotocol = check_response(response, key, subprotocols)
    answered = response.headers.get_all("Sec-WebSocket-Extensions")
    extension = None
    if answered:
        if compression != "deflate":
            raise NegotiationError(f"server answered extensions we did not offer: {answered}")
        # Looked up on the module at each call, so that tests can set its parameters.
        extension = deflate.client_accept(answered)
    return Agreement(subprotocol, extension)

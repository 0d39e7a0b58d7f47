"""Just enough HTTP/1.1 for the opening handshake (RFC 9112), with limits.

The parsing functions work on the bytes of a message head (the request or
status line plus headers, up to the blank line) and raise
:class:`~common.exceptions.InvalidHandshake` subclasses whose ``status`` is
the answer to send. Nothing here does I/O: reading a head from a socket is
:func:`common.streams.read_head`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus

from .exceptions import InvalidMessage

__all__ = [
    "Headers",
    "Request",
    "Response",
    "check_start",
    "parse_request",
    "parse_response",
    "serialize_response",
    "MAX_LINE",
    "MAX_HEADERS",
    "MAX_HEAD",
]

#: The longest request line or header line accepted, in bytes.
MAX_LINE = 8192
#: The most header lines accepted in one head.
MAX_HEADERS = 128
#: The largest head accepted, in bytes.
MAX_HEAD = 65536

_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Headers:
    """HTTP headers: case-insensitive names, repeatable, in arrival order.

    ``headers["Host"]`` returns the value of a header that must appear once
    (KeyError when absent); ``headers.get_all(name)`` returns every value.
    """

    __slots__ = ("_items", "_index")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        # Lower-cased name -> values, built on the first lookup: a handshake
        # looks up a dozen names, and each scan would lower-case every name.
        self._index: dict[str, list[str]] | None = None

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return values[0]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        index = self._index
        if index is None:
            index = self._index = {}
            for key, value in self._items:
                index.setdefault(key.lower(), []).append(value)
        return list(index.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __setitem__(self, name: str, value: str) -> None:
        self._items.append((name, value))
        self._index = None

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def tokens(self, name: str) -> list[str]:
        """The comma-separated tokens of every ``name`` header, lower-cased."""
        return [t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass
class Request:
    method: str
    #: The target in origin-form (RFC 9112 §3.2.1): path and query, such as
    #: ``/chat?room=1``, also when the request line gave the absolute-form.
    path: str
    #: The headers as received, except after an absolute-form target, whose
    #: authority replaces every received ``Host`` (RFC 9112 §3.2.2).
    headers: Headers
    #: The length of the body that follows the head (RFC 9112 §6.3): 0 when
    #: there is none, None when it is chunked and only its chunks tell.
    body_length: int | None = 0


@dataclass
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""


def check_start(data: bytes) -> None:
    """Refuse at once a message whose first byte cannot start an HTTP head.

    ``data`` is what has arrived so far, at least one byte. A method or
    ``HTTP/1.1`` starts with a token character (RFC 9112 §3, §4); anything
    else is answered now, since a TLS handshake or binary garbage may never
    contain the blank line that would end a head.
    """
    if data[0] not in _TOKEN_CHARS:
        if data[0] == 0x16:  # a TLS record of type handshake: a ClientHello
            raise InvalidMessage("this is a TLS handshake (wss://) on a plain-text port (ws://)")
        raise InvalidMessage(f"not HTTP: the first byte is {data[:1]!r}")


def _parse_headers(lines: list[bytes]) -> Headers:
    if len(lines) > MAX_HEADERS:
        raise InvalidMessage(
            f"more than {MAX_HEADERS} headers", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        )
    items = []
    for line in lines:
        if len(line) > MAX_LINE:
            raise InvalidMessage("header line too long", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        name, sep, value = line.partition(b":")
        if not sep or not name or not _TOKEN_CHARS.issuperset(name):
            raise InvalidMessage(f"malformed header line {line[:60]!r}")
        # The name passed the token check, so it is ASCII; latin-1 decodes any value.
        items.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
        if "\x00" in items[-1][1] or "\r" in items[-1][1] or "\n" in items[-1][1]:
            raise InvalidMessage("control character in a header value")
    return Headers(items)


def _body_length(headers: Headers) -> int | None:
    """The length of a request's body from its framing headers (RFC 9112 §6.3).

    Returns 0 without a body and None for a chunked one. Raises
    :class:`InvalidMessage` (400) when the headers could be read two ways: a
    proxy that took one reading and a server that took the other would
    disagree on where the next message starts (request smuggling, §11.2).
    """
    fields = headers.get_all("Content-Length")
    if "Transfer-Encoding" in headers:
        # §6.3 item 3: both at once "ought to be handled as an error".
        if fields:
            raise InvalidMessage("both Transfer-Encoding and Content-Length: the body's length is ambiguous")
        # §6.3 item 4: unless chunked is the final coding, the length cannot
        # be determined and "the server MUST respond with the 400".
        if headers.tokens("Transfer-Encoding")[-1:] != ["chunked"]:
            raise InvalidMessage("Transfer-Encoding does not end with chunked: the body's length is unknown")
        return None
    if not fields:
        return 0
    # §6.3 item 5: differing values are an unrecoverable error. RFC 9110
    # §8.6 lets a recipient accept identical repeats ("0, 0", or the header
    # twice) as one, or reject them; they are refused too, so that exactly
    # one reading exists for any proxy in front of us to share, and no
    # client has a reason to repeat the header.
    values = [value.strip(" \t") for field in fields for value in field.split(",")]
    if len(values) != 1:
        raise InvalidMessage(f"Content-Length must be one number, not {', '.join(fields)[:40]!r}")
    # 1*DIGIT: isdigit() alone passes "²", which int() refuses; and 18 digits
    # (an exabyte) keep int() far from its 4300-digit limit.
    value = values[0]
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidMessage(f"invalid Content-Length {value[:40]!r}")
    return int(value)


#: The schemes of an absolute-form target this server answers for: its own
#: pages and sockets (RFC 9110 §4.2, RFC 6455 §3), with or without TLS.
_SCHEMES = frozenset({b"http", b"https", b"ws", b"wss"})


def _absolute_form(target: bytes) -> tuple[bytes, bytes] | None:
    """``(authority, origin-form)`` of an absolute-form target, or None when
    ``target`` is not one (RFC 9112 §3.2.2).

    ``http://localhost:5678/chat?x=1`` is ``(b"localhost:5678",
    b"/chat?x=1")``; an empty path is ``/`` (§3.2.1). A target of this form
    without a host (RFC 9110 §4.2.1: "MUST reject it as invalid") or with a
    userinfo (RFC 9110 §4.2.4: treated "as an error") raises
    :class:`InvalidMessage` (400).
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in _SCHEMES:
        return None
    ends = [i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0]
    end = min(ends, default=len(rest))
    authority, path = rest[:end], rest[end:]
    if not authority:
        raise InvalidMessage(f"no host in the request target {target[:80]!r}")
    if b"@" in authority:
        raise InvalidMessage(f"a user name in the request target {target[:80]!r}")
    return authority, path if path.startswith(b"/") else b"/" + path


def parse_request(head: bytes) -> Request:
    """Parse a request head (RFC 9112 §3). Only HTTP/1.1 is accepted here.

    RFC 6455 §4.1: "The method of the request MUST be GET, and the HTTP
    version MUST be at least 1.1." The method itself is checked by the caller,
    which may serve HEAD or answer 405. A head whose framing headers leave
    the body's length ambiguous is refused here, whatever the method.

    The target may be in origin-form (``/chat``) or, as RFC 9112 §3.2.2 says
    a server MUST accept, in absolute-form (``http://localhost:5678/chat``):
    :attr:`Request.path` is then the origin-form, and the target's authority
    becomes the ``Host`` header, since the server "MUST ignore the received
    Host header field (if any)". Every check on Host (:mod:`common.handshake`'s,
    ``serve(hosts=...)``, an ``origins`` function) then applies to the
    authority. Other forms (``*``, CONNECT's ``host:port``) get 400.
    """
    request_line, *lines = head[:-4].split(b"\r\n") if head.endswith(b"\r\n\r\n") else [head]
    if len(request_line) > MAX_LINE:
        raise InvalidMessage("request line too long", HTTPStatus.REQUEST_URI_TOO_LONG)
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[0] or not _TOKEN_CHARS.issuperset(parts[0]):
        raise InvalidMessage(f"malformed request line {request_line[:80]!r}")
    method, target, version = parts
    if version != b"HTTP/1.1":
        if version.startswith(b"HTTP/"):
            raise InvalidMessage(f"unsupported HTTP version {version.decode('latin-1')}; HTTP/1.1 required")
        raise InvalidMessage(f"malformed request line {request_line[:80]!r}")
    if not target.isascii() or any(c <= 0x20 or c == 0x7F for c in target):
        raise InvalidMessage(f"unsupported request target {target[:80]!r}")
    authority = None
    if not target.startswith(b"/"):
        absolute = _absolute_form(target)
        if absolute is None:
            raise InvalidMessage(f"unsupported request target {target[:80]!r}")
        authority, target = absolute
    headers = _parse_headers(lines)
    if authority is not None:
        others = [(name, value) for name, value in headers.items() if name.lower() != "host"]
        headers = Headers([("Host", authority.decode("ascii")), *others])
    return Request(method.decode("ascii"), target.decode("ascii"), headers, _body_length(headers))


def parse_response(head: bytes) -> Response:
    """Parse a response head (RFC 9112 §4), as the client reads it."""
    status_line, *lines = head[:-4].split(b"\r\n") if head.endswith(b"\r\n\r\n") else [head]
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version != b"HTTP/1.1" or len(code) != 3 or not code.isdigit():
        raise InvalidMessage(f"malformed status line {status_line[:80]!r}")
    return Response(int(code), reason.decode("latin-1"), _parse_headers(lines))


def serialize_response(status: int, headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """Encode a response head and body."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error_response(status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A short plain-text error answer that closes the connection.

    Not to be cached (a refusal may depend on the moment or the Origin) and
    not to be sniffed as anything but text (its body may echo the request).
    A ``Connection`` among ``headers`` (``Upgrade`` beside a 426's
    ``Upgrade``, RFC 9110 §7.8) joins ``close`` in a single Connection header.
    """
    body = (text.rstrip() + "\n").encode()
    headers = list(headers)
    extra = [(name, value) for name, value in headers if name.lower() != "connection"]
    options = [value for name, value in headers if name.lower() == "connection"]
    all_headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Connection", ", ".join([*options, "close"])),
        *extra,
    ]
    return serialize_response(status, all_headers, body)

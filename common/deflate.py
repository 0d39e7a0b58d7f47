"""permessage-deflate (RFC 7692): negotiation and per-message compression.

Two halves, both without I/O:

* **Negotiation** (§5, §7). The client offers the extension in its
  ``Sec-WebSocket-Extensions`` request header, possibly several times with
  different parameters, in order of preference; the server accepts the first
  offer it can honour and answers with the parameters agreed on, or ignores
  them all. An offer with an unknown, repeated or out-of-range parameter is
  one the server cannot honour: §7 says to decline it, so the next one is
  tried, and without any the connection opens uncompressed. Only a header
  that breaks the grammar of RFC 6455 §9.1 raises
  :class:`~common.exceptions.NegotiationError` on the server, which answers
  it with HTTP 400. The client is stricter (§7): a bad parameter in the
  server's answer fails its handshake. :func:`server_negotiate` is the
  server's side, :func:`client_offer` and :func:`client_accept` the client's.

* **Compression** (§7.2). :class:`PerMessageDeflate` compresses a whole
  message with DEFLATE (RFC 1951, raw: no zlib header, hence negative
  ``wbits`` in :mod:`zlib`), flushes it to a byte boundary and removes the
  ``00 00 ff ff`` that the flush ends with; the receiver appends those four
  bytes again and inflates. RSV1 on the first frame marks a compressed
  message. With *context takeover* (the default) each direction keeps one
  compressor for the whole connection, so a message may refer back to text
  of earlier ones: small repetitive messages (JSON with the same keys) shrink
  to a fraction. ``*_no_context_takeover`` starts every message afresh.

The four parameters, each about one direction (§7.1.1, §7.1.2)::

    server_no_context_takeover   the server starts each message afresh
    client_no_context_takeover   the client starts each message afresh
    server_max_window_bits=N     the server's LZ77 window is at most 2**N bytes
    client_max_window_bits[=N]   the same for the client; without a value in
                                 an offer: "you may limit my window"

A typical browser offer and our answer::

    > Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits
    < Sec-WebSocket-Extensions: permessage-deflate

What it costs, measured with 1,000 connections on loopback (server CPU per
:func:`~common.broadcast` call; 2 loaded cores, zlib 1.2.13): a 1 KiB JSON
message takes ~15 ms uncompressed, the same with ``server_no_context_takeover``
(compressed once for everyone, 5.5 times fewer bytes on the wire), and
~65 ms with context takeover (compressed per connection; 16 KiB: ~270 ms
against ~19 ms), which also keeps ~38 KiB of compressor per connection.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Union

from .exceptions import NegotiationError, PayloadTooBig, ProtocolError

__all__ = [
    "PerMessageDeflate",
    "Params",
    "parse_extensions",
    "server_negotiate",
    "client_offer",
    "client_accept",
]

NAME = "permessage-deflate"

#: What a sync flush ends with; removed after compressing, added back before
#: inflating (RFC 7692 §7.2.1, §7.2.2).
TAIL = b"\x00\x00\xff\xff"

# Compressor settings. The window bits agreed on are a *maximum* (§7.1.2):
# a compressor may always use a smaller window, and the peer's decompressor,
# sized for the agreed one, still works. A 2**12-byte window with memLevel 5
# needs about 38 KiB per compressor instead of zlib's default 262 KiB (2**15,
# 8): zlib's formula (zconf.h) gives 2**(12+2) + 2**(5+9) = 32 KiB, plus
# 6 KiB of its own state, and tracemalloc measures 38.0 KiB (zlib 1.2.13).
# It compresses our telemetry JSON within 0.3 points of the default (16.0 %
# against 15.8 % for 16 KiB messages) and runs up to twice as fast: measured
# with zlib 1.2.13 on 64 B to 256 KiB messages. Level 6 is zlib's default,
# the one browsers use.
COMPRESS_LEVEL = 6
COMPRESS_MEM_LEVEL = 5
COMPRESS_MAX_WINDOW_BITS = 12


# --------------------------------------------------------------- the header

#: One extension from the header: its name and its ``(param, value)`` pairs,
#: value None for a parameter without ``=``.
Extension = tuple[str, list[tuple[str, Union[str, None]]]]

# RFC 7230 §3.2.6: token = 1*tchar; quoted-string with backslash escapes.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*)"')


def parse_extensions(values: Iterable[str]) -> list[Extension]:
    """Parse ``Sec-WebSocket-Extensions`` header values (RFC 6455 §9.1).

    Each value is a comma-separated list of extensions, each extension a
    token followed by ``;``-separated parameters, each parameter a token with
    an optional ``=value``, the value a token or a quoted-string that, once
    unquoted, is a token. Empty list elements are allowed (RFC 7230 §7).
    Extensions of all values come out in order; a syntax error raises
    :class:`NegotiationError`.

    >>> parse_extensions(['permessage-deflate; client_max_window_bits, x-y; a="1"'])
    [('permessage-deflate', [('client_max_window_bits', None)]), ('x-y', [('a', '1')])]
    """
    extensions: list[Extension] = []
    for value in values:
        pos = 0
        end = len(value)

        def error(expected: str) -> NegotiationError:
            return NegotiationError(
                f"invalid Sec-WebSocket-Extensions header {value!r}: "
                f"expected {expected} at position {pos}"
            )

        def token(what: str) -> str:
            nonlocal pos
            match = _TOKEN.match(value, pos)
            if match is None:
                raise error(what)
            pos = match.end()
            return match.group()

        def skip_ows() -> None:
            nonlocal pos
            while pos < end and value[pos] in " \t":
                pos += 1

        while True:
            # Skip empty elements: "a, , b" and a trailing comma are allowed.
            skip_ows()
            while pos < end and value[pos] == ",":
                pos += 1
                skip_ows()
            if pos == end:
                break
            name = token("an extension name")
            params: list[tuple[str, str | None]] = []
            skip_ows()
            while pos < end and value[pos] == ";":
                pos += 1
                skip_ows()
                param = token("a parameter name")
                skip_ows()
                param_value: str | None = None
                if pos < end and value[pos] == "=":
                    pos += 1
                    skip_ows()
                    if pos < end and value[pos] == '"':
                        quoted = _QUOTED.match(value, pos)
                        if quoted is None:
                            raise error("a closing quote")
                        param_value = re.sub(r"\\(.)", r"\1", quoted.group(1))
                        # RFC 6455 §9.1: once unquoted, the value MUST be a token.
                        if not _TOKEN.fullmatch(param_value):
                            raise error("a token inside the quotes")
                        pos = quoted.end()
                    else:
                        param_value = token("a parameter value")
                    skip_ows()
                params.append((param, param_value))
            if pos < end and value[pos] != ",":
                raise error("',' or ';'")
            extensions.append((name, params))
    return extensions


# ----------------------------------------------------------- the parameters


@dataclass(frozen=True)
class Params:
    """The four parameters of one offer or answer (RFC 7692 §7.1).

    A window size is None when absent; ``client_max_window_bits`` is True
    when an offer has it without a value.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | bool | None = None

    @classmethod
    def parse(cls, params: list[tuple[str, str | None]], *, offer: bool) -> Params:
        """Validate the parameters of an offer (``offer=True``) or an answer.

        Raises :class:`NegotiationError` for an unknown parameter, one given
        twice, a value where none is allowed, a missing value, or a window
        size other than 8 to 15 written as a plain decimal number (§7.1.2.1:
        "without leading zeroes"). The server declines such an offer; the
        client fails on such an answer (§7).
        """
        seen: set[str] = set()
        flags: set[str] = set()
        bits: dict[str, int | bool] = {}
        for name, value in params:
            key = name.lower()
            if key in seen:
                raise NegotiationError(f"permessage-deflate: duplicate parameter {name}")
            seen.add(key)
            if key in ("server_no_context_takeover", "client_no_context_takeover"):
                if value is not None:
                    raise NegotiationError(f"permessage-deflate: {name} takes no value, got {value!r}")
                flags.add(key)
            elif key == "server_max_window_bits" or key == "client_max_window_bits":
                if value is None and key == "client_max_window_bits" and offer:
                    bits[key] = True  # §7.1.2.2: "I can limit my window"
                elif value is None:
                    raise NegotiationError(f"permessage-deflate: {name} needs a value from 8 to 15")
                elif value not in _WINDOW_BITS:
                    raise NegotiationError(
                        f"permessage-deflate: {name}={value!r} is not a window size from 8 to 15"
                    )
                else:
                    bits[key] = int(value)
            else:
                raise NegotiationError(f"permessage-deflate: unknown parameter {name!r}")
        server_bits = bits.get("server_max_window_bits")
        return cls(
            server_no_context_takeover="server_no_context_takeover" in flags,
            client_no_context_takeover="client_no_context_takeover" in flags,
            server_max_window_bits=None if isinstance(server_bits, bool) else server_bits,
            client_max_window_bits=bits.get("client_max_window_bits"),
        )

    def __str__(self) -> str:
        """The extension as written in a header."""
        parts = [NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is True:
            parts.append("client_max_window_bits")
        elif self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


_WINDOW_BITS = frozenset(str(bits) for bits in range(8, 16))


def _check_bits(name: str, bits: int | None) -> None:
    if bits is not None and not 8 <= bits <= 15:
        raise ValueError(f"{name} must be None or 8 to 15, not {bits!r}")


# -------------------------------------------------------------- the server


def server_negotiate(
    header_values: Iterable[str],
    *,
    server_no_context_takeover: bool = False,
    client_no_context_takeover: bool = False,
    server_max_window_bits: int | None = None,
    client_max_window_bits: int | None = None,
) -> tuple[str, PerMessageDeflate] | None:
    """Pick the first acceptable permessage-deflate offer (RFC 7692 §5, §7).

    ``header_values`` are the request's ``Sec-WebSocket-Extensions`` values.
    Returns ``(answer, extension)``: the value of the response header and the
    extension that compresses this connection; None when the client made no
    acceptable offer (the connection opens without compression).

    The keyword arguments are the server's own demands, added to whatever
    the client offers: no context takeover for the server's or the client's
    messages, and a limit on either window. A client window limit can only
    be imposed on an offer that has ``client_max_window_bits`` (§7.1.2.2);
    other offers are declined, and the next one is tried.

    An offer with an unknown, repeated or invalid parameter is declined
    too, as RFC 7692 §7 requires ("A server MUST decline"): the next one is
    tried. Only a header that breaks the grammar of RFC 6455 §9.1 raises
    :class:`NegotiationError` (HTTP 400): it cannot be split into offers.
    """
    _check_bits("server_max_window_bits", server_max_window_bits)
    _check_bits("client_max_window_bits", client_max_window_bits)
    for offer in _valid_offers(parse_extensions(header_values)):
        # §7.1.2.2: without client_max_window_bits in the offer, the answer
        # MUST NOT have it; a server that needs it declines the offer.
        if client_max_window_bits is not None and offer.client_max_window_bits is None:
            continue
        # §7.1.2.1: answer server_max_window_bits only if the client asked;
        # a smaller window the server can use without saying so.
        server_bits = offer.server_max_window_bits
        if server_bits is not None and server_max_window_bits is not None:
            server_bits = min(server_bits, server_max_window_bits)
        # Echo a client window the client promised, or impose ours.
        client_bits = offer.client_max_window_bits
        if client_bits is True:
            client_bits = client_max_window_bits
        elif client_bits is not None and client_max_window_bits is not None:
            client_bits = min(client_bits, client_max_window_bits)
        answer = Params(
            server_no_context_takeover=offer.server_no_context_takeover or server_no_context_takeover,
            client_no_context_takeover=offer.client_no_context_takeover or client_no_context_takeover,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
        )
        extension = PerMessageDeflate(
            local_no_context_takeover=answer.server_no_context_takeover,
            remote_no_context_takeover=answer.client_no_context_takeover,
            local_max_window_bits=server_bits or server_max_window_bits or 15,
            remote_max_window_bits=client_bits or 15,
        )
        return str(answer), extension
    return None


def _valid_offers(extensions: list[Extension]) -> Iterator[Params]:
    """The permessage-deflate offers whose parameters are valid, in order.

    The others are left out: the server declines them (RFC 7692 §7).
    """
    for name, params in extensions:
        if name.lower() == NAME:
            try:
                yield Params.parse(params, offer=True)
            except NegotiationError:
                continue


# -------------------------------------------------------------- the client


def client_offer(
    *,
    server_no_context_takeover: bool = False,
    client_no_context_takeover: bool = False,
    server_max_window_bits: int | None = None,
    client_max_window_bits: int | bool | None = True,
) -> str:
    """The client's ``Sec-WebSocket-Extensions`` request value (§7.1).

    By default, what browsers send: ``permessage-deflate;
    client_max_window_bits`` (True: the parameter without a value, "the
    server may limit my window"). Pass the same keyword arguments to
    :func:`client_accept`.
    """
    _check_bits("server_max_window_bits", server_max_window_bits)
    if client_max_window_bits is not True:
        _check_bits("client_max_window_bits", client_max_window_bits)
    return str(
        Params(
            server_no_context_takeover=server_no_context_takeover,
            client_no_context_takeover=client_no_context_takeover,
            server_max_window_bits=server_max_window_bits,
            client_max_window_bits=client_max_window_bits,
        )
    )


def client_accept(
    header_values: Iterable[str],
    *,
    server_no_context_takeover: bool = False,
    client_no_context_takeover: bool = False,
    server_max_window_bits: int | None = None,
    client_max_window_bits: int | bool | None = True,
) -> PerMessageDeflate:
    """Check the server's answer to :func:`client_offer`; return the extension.

    ``header_values`` are the response's ``Sec-WebSocket-Extensions`` values
    (at least one); the keyword arguments are those given to
    :func:`client_offer`. Raises :class:`NegotiationError` when the server
    answered an extension we did not offer, answered it twice, used an
    unknown parameter or a bad value, or did not honour what we asked for:
    unlike the server, which declines a bad offer, the client MUST fail the
    connection on a bad answer (RFC 7692 §7).
    """
    extensions = parse_extensions(header_values)
    names = [name for name, _ in extensions]
    if not extensions or any(name.lower() != NAME for name in names):
        raise NegotiationError(f"server answered extensions we did not offer: {', '.join(names) or 'none'}")
    if len(extensions) > 1:
        raise NegotiationError("server answered permessage-deflate more than once")
    answer = Params.parse(extensions[0][1], offer=False)

    # §7.1.1.1: a server that cannot honour server_no_context_takeover must
    # decline the offer, not accept it without.
    if server_no_context_takeover and not answer.server_no_context_takeover:
        raise NegotiationError("server did not accept server_no_context_takeover")
    # §7.1.2.1: server_max_window_bits answered is at most the one offered;
    # without one offered, any value is the server's own business.
    server_bits = answer.server_max_window_bits
    if server_max_window_bits is not None:
        if server_bits is None:
            raise NegotiationError("server did not accept server_max_window_bits")
        if server_bits > server_max_window_bits:
            raise NegotiationError(
                f"server answered server_max_window_bits={server_bits}, "
                f"more than the {server_max_window_bits} offered"
            )
    # §7.1.2.2: client_max_window_bits only if offered, and not above it.
    client_bits = answer.client_max_window_bits
    if client_bits is not None:
        if client_max_window_bits is None:
            raise NegotiationError("server answered client_max_window_bits, which we did not offer")
        if client_max_window_bits is not True and client_bits > client_max_window_bits:
            raise NegotiationError(
                f"server answered client_max_window_bits={client_bits}, "
                f"more than the {client_max_window_bits} offered"
            )
    elif client_max_window_bits is not True:
        client_bits = client_max_window_bits  # the limit we promised holds
    return PerMessageDeflate(
        local_no_context_takeover=client_no_context_takeover or answer.client_no_context_takeover,
        remote_no_context_takeover=answer.server_no_context_takeover,
        local_max_window_bits=client_bits or 15,
        remote_max_window_bits=server_bits or 15,
    )


# --------------------------------------------------------- the compression


class PerMessageDeflate:
    """Compress and decompress the messages of one connection (§7.2).

    ``local_*`` parameters apply to the messages this side sends, ``remote_*``
    to those it receives. :meth:`encode` is called by the connection for a
    whole message; :meth:`decode` by the receiver for each frame of a message
    that arrived with RSV1.
    """

    def __init__(
        self,
        *,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
    ) -> None:
        _check_bits("local_max_window_bits", local_max_window_bits)
        _check_bits("remote_max_window_bits", remote_max_window_bits)
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        # zlib refuses a raw deflate window of 8 bits (since 1.2.9; older
        # versions silently used 9). 9 is safe where 8 was agreed: zlib
        # never matches farther back than the window minus 262 bytes, 250
        # bytes for a 512-byte window, so the peer's 256-byte window holds
        # every distance we use. See also COMPRESS_MAX_WINDOW_BITS.
        self.compress_bits = max(9, min(local_max_window_bits, COMPRESS_MAX_WINDOW_BITS))
        # Inflating, zlib accepts a window of 8 bits and we must not use
        # less than the peer's: the agreed size. (8 works for inflate with
        # zlib 1.2.13; tests/test_deflate_unit.py checks a 256-byte distance.)
        self.decompress_bits = remote_max_window_bits
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None

    @property
    def shared_key(self) -> int | None:
        """What :meth:`encode`'s output depends on besides the message.

        Without context takeover the output depends only on the window used,
        so :func:`~common.broadcast` compresses once for every connection
        with the same key. None: the compressor carries state from earlier
        messages, and each connection must compress for itself.
        """
        return self.compress_bits if self.local_no_context_takeover else None

    def encode(self, payload: bytes) -> bytes:
        """Compress one whole message (§7.2.1); the caller sets RSV1."""
        compressor = self._compressor
        if compressor is None:
            compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -self.compress_bits, COMPRESS_MEM_LEVEL)
            if not self.local_no_context_takeover:
                self._compressor = compressor
        # A sync flush ends the message on a byte boundary with an empty
        # stored block, 00 00 ff ff, which §7.2.1 says to remove. (Without
        # context takeover a fresh compressor per message costs about as
        # much as a full flush, and holds no memory between messages.)
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(TAIL)
        return data[:-4]

    def decode(self, payload: bytes | memoryview, fin: bool, max_size: int | None) -> bytes:
        """Inflate one frame of a compressed message (§7.2.2).

        ``max_size`` is how many more bytes the message may grow (None: no
        limit). zlib stops after ``max_size + 1`` bytes, so a small frame that
        would inflate to gigabytes (a "zip bomb") costs at most that much
        memory before :class:`PayloadTooBig` (1009) is raised.
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-self.decompress_bits)
        if fin:
            payload = b"".join((payload, TAIL))  # any bytes-like payload, one copy
        limit = 0 if max_size is None else max_size + 1  # 0: no limit
        try:
            data = decompressor.decompress(payload, limit)
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc} (RFC 7692 §7.2.2)") from None
        if max_size is not None and len(data) > max_size:
            raise PayloadTooBig(f"compressed message inflates beyond max_size (more than {max_size} bytes to go, §10.4)")
        if decompressor.eof:
            # The peer ended its DEFLATE stream with a BFINAL block (§7.2.3.4
            # allows it); what follows, our 00 00 ff ff, is ignored, and the
            # next message starts a new stream.
            self._decompressor = None
        elif fin and self.remote_no_context_takeover:
            self._decompressor = None  # the next message starts afresh; free the window
        return data

    def inflate(self, data: bytes, fin: bool, piece: int) -> Iterator[bytes]:
        """Inflate the next bytes of a compressed message, in pieces of at most ``piece`` bytes.

        For a reader that looks at a message as it passes and keeps none of
        it (:mod:`common.observer`): ``data`` is any part of a frame's
        payload, ``fin`` True for the end of the message's last frame (the
        ``00 00 ff ff`` is then appended, §7.2.2). The decompression context
        carries over from message to message as in :meth:`decode`.
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-self.decompress_bits)
        if fin:
            data += TAIL
        try:
            while True:
                out = decompressor.decompress(data, piece)
                data = decompressor.unconsumed_tail
                if out:
                    yield out
                # A full piece may leave output inside zlib, which an empty call drains.
                if decompressor.eof or (not data and len(out) < piece):
                    break
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc} (RFC 7692 §7.2.2)") from None
        if decompressor.eof or (fin and self.remote_no_context_takeover):
            self._decompressor = None

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits})"
        )

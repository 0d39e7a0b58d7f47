"""Sending one message to many connections: :func:`broadcast`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from .connection import Connection, Data, State
from .frames import Opcode, encode_frame
from .protocol import COMPRESSION_THRESHOLD

__all__ = ["broadcast"]

logger = logging.getLogger("common")


def broadcast(connections: Iterable[Connection], message: Data) -> None:
    """Send ``message`` to every open connection, without waiting.

    Not a coroutine: waiting for one slow client would stall all the others.
    The frame is encoded once and written to each connection as it is; a
    connection whose send buffer is over its ``write_limit`` is skipped (and
    logged), so that it cannot make the server's memory grow; one that stays
    over it for longer than its ``ping_timeout`` (or ``close_timeout`` when
    keepalive is off) has stopped reading and is dropped. Client
    connections mask every frame with their own key, so they are written to
    one at a time.

    With permessage-deflate, connections whose compressor starts afresh for
    every message (``server_no_context_takeover``) share one compressed frame
    per window size. Those with context takeover each compress for
    themselves: their compressors remember different pasts.
    """
    if isinstance(message, str):
        opcode, payload = Opcode.TEXT, message.encode()
    elif isinstance(message, (bytes, bytearray, memoryview)):
        opcode, payload = Opcode.BINARY, bytes(message)
    else:
        raise TypeError(f"cannot broadcast {type(message).__name__}: expected str or bytes")
    frame = encode_frame(opcode, payload)
    compress = len(payload) >= COMPRESSION_THRESHOLD
    compressed: dict[object, bytes] = {}  # extension.shared_key -> frame
    skipped = 0
    for connection in connections:
        if connection.protocol.state is not State.OPEN:
            continue
        if connection.buffered_amount() > connection.write_limit:
            skipped += 1
            _drop_if_stalled(connection)
            continue
        connection.stalled_since = None
        extension = connection.extension
        if extension is None or not compress:
            if connection.is_client or connection.debug:
                # Masked with its own key, or shown in the wire view: its own frame.
                _write_own_frame(connection, opcode, payload)
            else:
                connection.write_now(frame)
        elif connection.is_client or connection.debug or (key := extension.shared_key) is None:
            # Or with context takeover: its own compressor.
            _write_own_frame(connection, opcode, payload)
        else:
            shared = compressed.get(key)
            if shared is None:
                shared = compressed[key] = encode_frame(opcode, extension.encode(payload), rsv1=True)
            connection.write_now(shared)
    if skipped:
        logger.warning("broadcast skipped %d connection(s) that are not reading fast enough", skipped)


def _write_own_frame(connection: Connection, opcode: int, payload: bytes) -> None:
    for chunk in connection.protocol.send_data(opcode, payload):
        connection.write_now(chunk)


def _drop_if_stalled(connection: Connection) -> None:
    """Abort a connection whose peer has not read for too long.

    A close frame could not get through the full buffer, so the TCP
    connection is aborted; the handler sees ConnectionClosedError (1006).
    """
    now = time.monotonic()
    if connection.stalled_since is None:
        connection.stalled_since = now
        return
    bound = connection.ping_timeout if connection.ping_timeout is not None else connection.close_timeout
    if now - connection.stalled_since > bound:
        logger.info("%s stopped reading for %.0f s; dropping it", connection, now - connection.stalled_since)
        connection.transport.abort()

"""Unit tests of common.frames: byte-exact encoding, masking, close payloads."""

import os
import struct

import pytest

from common.exceptions import InvalidPayload, ProtocolError
from common.frames import Close, CloseCode, Opcode, apply_mask, encode_frame, is_valid_close_code

MASK = b"\x37\xfa\x21\x3d"


def reference_mask(data: bytes, mask: bytes) -> bytes:
    """The RFC's definition, byte by byte (§5.3): j = i MOD 4."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_unmasked_text_frame_matches_the_rfc_example():
    """RFC 6455 §5.7: a single-frame unmasked text message "Hello"."""
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")


def test_masked_text_frame_matches_the_rfc_example():
    """RFC 6455 §5.7: a single-frame masked text message "Hello"."""
    frame = encode_frame(Opcode.TEXT, b"Hello", mask=True, mask_key=MASK)
    assert frame == bytes.fromhex("818537fa213d7f9f4d5158")


def test_unmasked_ping_matches_the_rfc_example():
    """RFC 6455 §5.7: an unmasked Ping with body "Hello"."""
    assert encode_frame(Opcode.PING, b"Hello") == bytes.fromhex("890548656c6c6f")


def test_masked_pong_matches_the_rfc_example():
    """RFC 6455 §5.7: a masked Pong with body "Hello" (the key of the masked text example)."""
    assert encode_frame(Opcode.PONG, b"Hello", mask=True, mask_key=MASK) == bytes.fromhex("8a8537fa213d7f9f4d5158")


def test_fragmented_text_matches_the_rfc_example():
    """RFC 6455 §5.7: "Hel" then "lo" as two fragments."""
    assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert encode_frame(Opcode.CONT, b"lo") == bytes.fromhex("80026c6f")


@pytest.mark.parametrize(
    "length, header",
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (256, b"\x82\x7e\x01\x00"),         # RFC 6455 §5.7: 256 bytes in one unmasked frame
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f" + struct.pack("!Q", 65536)),  # §5.7: 64 KiB, 82 7F 0000000000010000
    ],
)
def test_length_encodings_at_every_boundary(length, header):
    """§5.2: 7-bit lengths up to 125, 16-bit up to 65535, 64-bit beyond."""
    assert encode_frame(Opcode.BINARY, b"x" * length) == header + b"x" * length


def test_rsv1_and_fin_bits():
    """RSV1 marks a compressed first frame (RFC 7692 §6); FIN=0 a fragment."""
    assert encode_frame(Opcode.TEXT, b"", fin=False, rsv1=True)[0] == 0x41


def test_masked_frames_use_a_fresh_random_key():
    """§5.3: the masking key MUST be unpredictable, so two frames differ."""
    assert encode_frame(Opcode.TEXT, b"same", mask=True) != encode_frame(Opcode.TEXT, b"same", mask=True)


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 1000, 16383, 16384, 16385, 65537, 2**20 + 3])
def test_apply_mask_matches_the_reference_at_every_size(size):
    """Both masking methods (big-integer XOR, translate tables) agree with §5.3."""
    data = os.urandom(size)
    assert apply_mask(data, MASK) == reference_mask(data, MASK)
    assert apply_mask(apply_mask(data, MASK), MASK) == data


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999])
def test_valid_close_codes(code):
    """§7.4.1 and the IANA registry: codes a peer may send."""
    assert is_valid_close_code(code)
    assert Close.parse(struct.pack("!H", code) + b"bye") == Close(code, "bye")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes_are_protocol_errors(code):
    """§7.4.1: 1004–1006 and 1015 are never sent; 0–999, 1016–2999 and 5000+ are not valid."""
    assert not is_valid_close_code(code)
    with pytest.raises(ProtocolError) as info:
        Close.parse(struct.pack("!H", code))
    assert info.value.code == CloseCode.PROTOCOL_ERROR


def test_empty_close_payload_means_no_status():
    """§7.1.5: no status code in the close frame is reported as 1005."""
    assert Close.parse(b"") == Close(CloseCode.NO_STATUS_RCVD)
    assert Close(CloseCode.NO_STATUS_RCVD).serialize() == b""


def test_one_byte_close_payload_is_a_protocol_error():
    """§5.5.1: a close body, if any, starts with a 2-byte code."""
    with pytest.raises(ProtocolError):
        Close.parse(b"\x03")


def test_close_reason_must_be_utf8():
    """§5.5.1 and §8.1: the reason is UTF-8; otherwise 1007."""
    with pytest.raises(InvalidPayload) as info:
        Close.parse(b"\x03\xe8\xff")
    assert info.value.code == CloseCode.INVALID_DATA


def test_close_round_trip_and_description():
    """A close encodes as code + reason and reads back; str() names the code."""
    close = Close(1001, "server shutting down")
    assert Close.parse(close.serialize()) == close
    assert str(close) == "1001 (going away) server shutting down"
    assert str(Close(4000)) == "4000 (application)"

"""Checks of the benchmark itself:  python3 -m pytest bench/test_bench.py

The load generator's verdicts are only worth something if its own codec is right and if
it really refuses wrong answers, so both are tested here, without the network where
possible; the end-to-end tests use the tcp floor server and common/ on loopback.
"""

import json
import os
import subprocess
import sys
import zlib

import pytest

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import loadgen  # noqa: E402
import run  # noqa: E402
import wsclient  # noqa: E402
from wsclient import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, FrameParser, ProtocolError  # noqa: E402


def test_mask_is_its_own_inverse():
    payload = os.urandom(1000)
    key = b"\x01\x02\x03\x04"
    assert wsclient.mask(wsclient.mask(payload, key), key) == payload
    assert wsclient.mask(b"\x00\x00\x00\x00\x00", key) == b"\x01\x02\x03\x04\x01"


def test_client_frames_are_masked_and_sized():
    for size, header in ((10, 2), (300, 4), (70000, 10)):
        frame = wsclient.client_frame(OP_BINARY, b"x" * size)
        assert frame[0] == 0x82 and frame[1] & 0x80
        assert len(frame) == header + 4 + size


def test_parser_reassembles_fragments_around_a_ping_byte_by_byte():
    stream = (bytes([OP_TEXT, 3]) + b"abc" + bytes([0x80 | OP_PING, 1]) + b"p"
              + bytes([0x80 | OP_CONT, 2]) + b"de")
    parser = FrameParser()
    out = []
    for i in range(len(stream)):
        out += parser.feed(stream[i:i + 1])
    assert out == [(OP_PING, b"p"), (OP_TEXT, b"abcde")]


def test_parser_inflates_with_context_takeover():
    params = wsclient.DeflateParams.from_response("permessage-deflate; client_max_window_bits=12")
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    parser = FrameParser(params)
    for text in (b"hello hello hello", b"hello hello hello again"):
        data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
        data = data[:-4]
        assert parser.feed(bytes([0xC0 | OP_TEXT, len(data)]) + data) == [(OP_TEXT, text)]


def test_parser_rejects_masked_server_frames_and_reserved_bits():
    with pytest.raises(ProtocolError):
        FrameParser().feed(bytes([0x81, 0x81]) + b"kkkk" + b"x")
    with pytest.raises(ProtocolError):
        FrameParser().feed(bytes([0xC1, 1]) + b"x")  # RSV1 without permessage-deflate


def ring_checker(ring):
    return loadgen.ReplyChecker(ring.expect, ring.frame_len, ring.expect_len,
                                lambda i: ring.messages[i % ring.k], cyclic=True)


def test_checker_counts_complete_messages_only_across_the_ring_wrap():
    ring = loadgen.build_ring(0, 4, 32, False, None, False)
    checker = ring_checker(ring)
    stream = ring.expect[: ring.expect_len] * 3
    assert checker.feed(stream[:50]) == 1  # one 34-byte frame and a part of the next
    assert checker.feed(stream[50:]) == 11
    assert checker.parser is None  # stayed on the fast path


def test_checker_falls_back_to_the_parser_for_fragmented_replies():
    ring = loadgen.build_ring(0, 4, 32, False, None, False)
    checker = ring_checker(ring)
    second = ring.messages[1][1]
    checker.feed(ring.expect[:10])  # part of message 0 on the fast path
    fragmented = (ring.expect[10:34] + bytes([OP_TEXT, 16]) + second[:16]
                  + bytes([0x80 | OP_CONT, 16]) + second[16:])
    assert checker.feed(fragmented) == 2
    assert checker.parser is not None and checker.done == 2


def test_checker_refuses_a_wrong_or_stale_echo():
    ring = loadgen.build_ring(0, 4, 32, False, None, False)
    checker = ring_checker(ring)
    checker.feed(ring.expect[:34])
    with pytest.raises(loadgen.BenchError, match="wrong"):
        checker.feed(ring.expect[:34])  # message 0 again instead of message 1


def test_tcp_checker_refuses_changed_bytes():
    ring = loadgen.build_ring(0, 4, 32, False, None, True)
    checker = loadgen.ReplyChecker(ring.expect, ring.frame_len, ring.expect_len,
                                   lambda i: ring.messages[i % ring.k], cyclic=True, raw_tcp=True)
    with pytest.raises(loadgen.BenchError):
        checker.feed(b"\x00" + ring.expect[1:38])


def test_generator_fails_loudly_against_a_server_that_does_not_speak_websocket(tmp_path):
    server = run.ServerProcess(run.SERVERS["tcp"], str(tmp_path)).start()
    try:
        proc = subprocess.run(
            [sys.executable, run.LOADGEN, "small", "--port", str(server.port), "--server-pid", str(server.pid),
             "--warmup", "0", "--duration", "0.2"], capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 2
    assert "101" in json.loads(proc.stdout)["error"]  # the echoed request is no 101 response


def test_run_end_to_end_and_no_server_left(tmp_path):
    out = tmp_path / "result.json"
    servers = "tcp,common" if os.path.exists(os.path.join(run.REPO, "common", "__init__.py")) else "tcp"
    status = run.main(["--scenarios", "small,pipelined", "--servers", servers, "--reps", "1",
                       "--warmup", "0.05", "--duration", "0.2", "--json", str(out)])
    assert status == 0
    assert run.ServerProcess.running == []
    summary = json.loads(out.read_text())["summary"]
    assert {row["server"] for row in summary} == set(servers.split(","))
    for row in summary:
        assert row["median"] > 0 and 0 <= row["gen_cpu"] < 4


def test_baseline_runs_another_checkouts_common_beside_this_one(tmp_path, capsys):
    out = tmp_path / "result.json"
    status = run.main(["--scenarios", "small", "--servers", "common", "--reps", "1", "--warmup", "0.05",
                       "--duration", "0.2", "--baseline", run.REPO, "--json", str(out)])
    assert status == 0
    assert run.ServerProcess.running == []
    rows = {row["server"]: row for row in json.loads(out.read_text())["summary"]}
    assert set(rows) == {"common", "common@base"}
    assert rows["common"]["vs_base"] > 0
    assert "small echo: common / common@base = " in capsys.readouterr().out


def test_baseline_must_hold_a_common_package(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--baseline", str(tmp_path)])
    assert "no common/ package there" in capsys.readouterr().err


def test_baseline_server_imports_common_from_the_baseline_checkout(tmp_path):
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "__init__.py").write_text("raise ImportError('the baseline checkout')\n")
    out = tmp_path / "result.json"
    status = run.main(["--scenarios", "small", "--servers", "common", "--reps", "1", "--warmup", "0.05",
                       "--duration", "0.2", "--baseline", str(tmp_path), "--json", str(out)])
    assert status == 0
    result = json.loads(out.read_text())
    assert "the baseline checkout" in result["skipped"]["common@base"]
    assert [row["server"] for row in result["summary"]] == ["common"]


def test_servers_of_a_repetition_get_environments_of_one_size(tmp_path):
    """The layout padding: whatever checkout a server imports common/ from, its environment has the same size."""
    def size(spec, padding):
        env = run.ServerProcess(spec, str(tmp_path), padding=padding)._environment()
        return sum(len(k) + len(v) for k, v in env.items())

    here, there = run.SERVERS["common"], run.SERVERS["common"].at("/a/much/longer/path/to/another/checkout")
    assert size(here, 100) == size(there, 100) == size(run.SERVERS["websockets"], 100)
    assert size(here, 900) - size(here, 100) == 800

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
    servers = "tcp,streams,common" if os.path.exists(os.path.join(run.REPO, "common", "__init__.py")) else "tcp,streams"
    status = run.main(["--scenarios", "small,pipelined", "--servers", servers, "--reps", "1",
                       "--warmup", "0.05", "--duration", "0.2", "--json", str(out)])
    assert status == 0
    assert run.ServerProcess.running == []
    summary = json.loads(out.read_text())["summary"]
    assert {row["server"] for row in summary} == set(servers.split(","))
    for row in summary:
        assert row["median"] > 0 and 0 <= row["gen_cpu"] < 4


def test_idle_memory_breaks_a_connection_down_by_allocating_line():
    proc = subprocess.run(
        [sys.executable, os.path.join(run.BENCH, "idle_memory.py"), "--connections", "20", "--min", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    *rows, total = proc.stdout.splitlines()[1:]
    assert total.endswith("over 20 connections")
    # Every row shown (--min 0), each rounded to 0.1 B, adds up to the total.
    shown = sum(float(row.split()[0]) for row in rows)
    assert abs(float(total.split()[0]) - shown) <= 0.05 * len(rows) + 0.1
    assert any("/common/connection.py:" in row for row in rows)


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


# --------------------------------------------------------------------------- bench/instructions.py

import shutil  # noqa: E402

import instructions  # noqa: E402

CALLGRIND_DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  /usr/bin/python3.11 bench/servers/common_echo.py 0
part: 1

desc: I1 cache:
timeframe (BB): 123456789
positions: line
events: Ir
summary: 881636

fn=(1) main
16 40
totals: 881636
"""


def test_callgrind_total_reads_the_totals_line_of_a_dump():
    assert instructions.callgrind_total(CALLGRIND_DUMP) == 881636
    assert instructions.callgrind_total(CALLGRIND_DUMP.replace("summary: 881636\n", "")) == 881636


def test_callgrind_total_falls_back_to_summary_and_picks_the_event():
    assert instructions.callgrind_total("events: Ir\nsummary: 12\n") == 12
    several = "events: Ir Dr Dw\nfn=(1) f\n3 1 2 3\ntotals: 10 20 30\n"
    assert instructions.callgrind_total(several) == 10
    assert instructions.callgrind_total(several, "Dw") == 30
    with pytest.raises(ValueError):
        instructions.callgrind_total("events: Ir\nfn=(1) f\n3 1\n")  # truncated: no total
    with pytest.raises(ValueError):
        instructions.callgrind_total(several, "Bc")


def test_instructions_table_compares_common_with_its_baseline_and_websockets():
    opts = instructions.parse_args(["--scenarios", "churn", "--servers", "common,websockets",
                                    "--baseline", run.REPO])
    results = instructions.Results()
    for name, ops, total in (("common", 100, 90_000_000), ("common@base", 200, 200_000_000),
                             ("websockets", 50, 60_000_000)):
        results.runs[("churn", name)] = [instructions.Measurement("churn", name, ops, total, 4.0)]
    rows = {row[1]: row for row in instructions.table_rows(results, opts)[1:]}
    assert rows["common"][3] == "900,000"
    assert rows["common"][5] == "0.9000x"         # 900,000 / 1,000,000 per connection
    assert rows["common"][6] == "0.750x"          # 900,000 / 1,200,000
    assert rows["websockets"][5:] == ["", ""]


def test_instructions_exits_with_status_2_without_valgrind(monkeypatch, capsys):
    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    assert instructions.main(["--scenarios", "small", "--servers", "common"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "valgrind" in err


VALGRIND_MISSING = shutil.which("valgrind") is None or shutil.which("callgrind_control") is None


@pytest.mark.skipif(VALGRIND_MISSING, reason="valgrind (with callgrind_control) is not installed")
def test_instructions_end_to_end_counts_instructions_per_round_trip(tmp_path):
    opts = instructions.parse_args(["--scenarios", "small", "--servers", "common",
                                    "--warmup", "0.2", "--duration", "0.3"])
    m = instructions.measure("small", run.SERVERS["common"], opts, str(tmp_path / "small"))
    assert run.ServerProcess.running == []
    assert m.ops > 0
    assert 10_000 < m.per_op < 10_000_000  # ~120,000 for common/ on Python 3.11


# --------------------------------------------------------------------------- bench/inspector.py

def load_inspect_bench():
    """bench/inspector.py as a module of its own (not ``common.inspector``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_inspect", os.path.join(BENCH, "inspector.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inspect_measures_every_path_and_leaves_no_process(tmp_path, capsys):
    bench_inspect = load_inspect_bench()
    out = tmp_path / "result.json"
    status = bench_inspect.main(["--seconds", "0.2", "--warmup", "0.05", "--repeat", "1", "--json", str(out)])
    assert status == 0
    assert bench_inspect.Child.running == []
    printed = capsys.readouterr().out
    assert "round trips/s" in printed and "latency ratio" in printed
    assert "the view received" in printed and "note: FAILED" not in printed
    rows = json.loads(out.read_text())["summary"]
    assert [(row["scenario"], row["path"]) for row in rows] == [
        (scenario, path) for scenario in ("small", "large") for path in ("direct", "inspector", "inspector+view")]
    for row in rows:
        assert row["rate"] > 0 and row["median_us"] > 0
        assert (row["rate_ratio"] is None) == (row["path"] == "direct")
        assert (row["inspector_cpu"] is None) == (row["path"] == "direct")


def test_inspect_refuses_a_window_of_no_time(capsys):
    bench_inspect = load_inspect_bench()
    with pytest.raises(SystemExit):
        bench_inspect.parse_args(["--seconds", "0"])
    assert "--seconds must be above 0" in capsys.readouterr().err

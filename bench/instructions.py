"""Instructions per operation: a before/after comparison of the benchmark servers' own work.

    python3 bench/instructions.py [--baseline DIR] [--scenarios small,pipelined,large,broadcast,churn]
                                  [--servers common,common+deflate,websockets] [--duration S]
                                  [--warmup S] [--clients N] [--reps R]

Why
---
bench/run.py measures time: wall-clock throughput and the server's CPU time per operation.
On the 2-core VM of bench/README.md those figures move by several percent from run to run,
and once moved by 20 % between two commits that differ only in a function that churn never
calls (198 vs 247 us of server CPU per connection), while callgrind counted 881,636 vs
880,543 instructions per connection: the same work in the interpreter.  The difference was
in the kernel: one build's process had never raised glibc's mmap threshold, so each 256 KiB
asyncio read buffer cost mmap, mremap and munmap (common/connection.py now raises it).
This script counts the CPU instructions the server process executes per operation, which
are the same from run to run: it says whether a change made the server do more or less
work, to a fraction of a percent, far below what time measurements on this VM resolve.

What it does not see: callgrind counts user-space instructions only, so system calls and
page faults are invisible to it (compare them with ``strace -c -p PID``), and an
instruction is not a time (a cache miss costs more than an add).  It complements run.py
rather than replaces it.

Method
------
For each scenario and server (plus NAME@base, the common/ of the --baseline checkout, for
each common server), one fresh server process runs under valgrind's callgrind with
instrumentation off (``--instr-atstart=no``), then:

1. Set-up, not counted: the generator (this process, driving bench/loadgen.py's connection
   classes, which check every byte as in run.py) opens the scenario's connections and runs
   a warm-up phase of --warmup seconds, so that first-use costs (lazy imports, Python's
   specializing interpreter, caches, buffers) are paid before the count starts.
2. At rest: the generator has nothing in flight, the server's CPU time (/proc/PID/stat)
   has not moved for 0.3 s and none of its threads is runnable; then
   ``callgrind_control -i on PID``.
3. The counted phase: for --duration seconds the generator keeps the scenario's load going;
   then it starts nothing new and waits until every operation it started has completed (the
   echoes received, the broadcast burst delivered to every client, the churn connection
   closed by the server), and until the server is at rest again; then
   ``callgrind_control -d PID`` dumps the count, and the server is killed (SIGKILL).
4. Instructions per operation = the dump's total (its ``totals:``/``summary:`` line, event
   Ir) / the operations of the counted phase.

So the count and the operations match exactly: every operation counted was started after
instrumentation went on and finished before the dump, and the server did nothing else in
between (an idle server costs a few hundred instructions for the two wake-ups that
callgrind_control causes).  Connection set-up is outside the count for the echo and
broadcast scenarios (their connections are opened in step 1 and stay open), and inside it
for churn, whose operation is one whole connection: each one counted was opened, used and
closed within the phase.  This is why the generator runs here, on loadgen.py's classes,
rather than as loadgen.py: its windows are cut out of a running stream, with operations in
flight at both edges, which an instrumented period cannot match exactly.  The operations:

  small      a round trip: 1 connection, one 32-byte text message at a time
  pipelined  an echoed message: 16 connections x 32 messages of 32 bytes in flight
  large      an echoed 1 MiB binary message: 1 connection, 2 in flight
  broadcast  a delivery: one 64-byte message to one client, 1,000 clients as in run.py;
             bursts of ``GO n`` until the window is over, each burst delivered in full
  churn      a connection: connect, handshake, close handshake, server closes TCP; 8 in
             parallel

memory is not a CPU scenario and is not measured here.

Under callgrind the server runs 4 to 40 times slower than natively (by scenario) while the
generator runs at full speed, so where a scenario's batching depends on timing (pipelined
and large: how many frames, how many bytes one read brings) the mix is that of a
slowed-down server, as it is for both sides of a comparison.  Each count includes everything
the process executes in user space: the interpreter, C extensions and libraries (zlib), not
the kernel.  Counts repeat: two runs of each server and scenario in bench/README.md agree
to within 0.1 %, except websockets' large echo (±5 %, its batching of 1 MiB messages);
--reps R shows the spread.

Every server is killed (by pid) when its measurement ends, and in any case on exit, Ctrl+C
or error; all traffic is on 127.0.0.1.  Needs valgrind (with callgrind_control): exits with
status 2 if it is missing.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import benchproto  # noqa: E402
import loadgen  # noqa: E402
import run  # noqa: E402
from run import Failure, ServerSpec, Skip  # noqa: E402

SCENARIO_NAMES = ["small", "pipelined", "large", "broadcast", "churn"]
UNITS = {"small": "round trip", "pipelined": "message", "large": "1 MiB message",
         "broadcast": "delivery", "churn": "connection"}
DEFAULT_SERVERS = "common,common+deflate,websockets"
START_TIMEOUT = 120.0   # Python starting under valgrind: ~1.5 s here, much more on a loaded machine
REST_TIMEOUT = 30.0     # how long the server may take to come to rest
CONTROL_TIMEOUT = 60.0  # one callgrind_control command


# --------------------------------------------------------------------------- callgrind

def callgrind_total(text: str, event: str = "Ir") -> int:
    """The total of one event (default: instructions, Ir) in a callgrind dump.

    Dumps name their events on an ``events:`` line and give the totals on a ``totals:``
    line (at the end) and/or a ``summary:`` line (in the header, older valgrinds); with
    several events, the values are in the order of ``events:``.
    """
    events: list[str] | None = None
    totals: list[str] | None = None
    summary: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("totals:"):
            totals = line.split()[1:]
        elif line.startswith("summary:"):
            summary = line.split()[1:]
    values = totals or summary
    if not values:
        raise ValueError("no 'totals:' or 'summary:' line in the callgrind dump")
    index = 0
    if events is not None:
        if event not in events:
            raise ValueError(f"event {event} not in the dump's events: {' '.join(events)}")
        index = events.index(event)
    if index >= len(values):
        raise ValueError(f"the dump's totals have no value for {event}: {' '.join(values)}")
    return int(values[index])


def python_binary() -> str:
    """The interpreter for valgrind to run: the real executable, never a launcher script.

    A pyenv shim is a shell script: valgrind would trace the shell, not Python.  In a
    virtual environment, sys.executable is a symlink to the real binary whose own path
    tells Python it runs in the environment, so it is kept as it is (valgrind follows it).
    """
    if sys.prefix != sys.base_prefix:
        return sys.executable
    return os.path.realpath(sys.executable)


def missing_tools() -> list[str]:
    return [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]


class CallgrindServer(run.ServerProcess):
    """A benchmark server running under callgrind, instrumentation off until begin()."""

    def __init__(self, spec: ServerSpec, work_dir: str) -> None:
        os.makedirs(work_dir, exist_ok=True)
        super().__init__(spec, work_dir)
        self.work_dir = work_dir
        self.dump_base = os.path.join(work_dir, "callgrind.out")
        # valgrind's FIFOs for callgrind_control go here, so a killed server leaves none in /tmp
        self.vgdb_prefix = os.path.join(work_dir, "vgdb")
        self.valgrind_log = os.path.join(work_dir, "valgrind.log")
        self.counted_from = self.counted_until = 0.0  # monotonic clock, set by begin() and end()

    def command(self) -> list[str]:
        return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={self.dump_base}", f"--vgdb-prefix={self.vgdb_prefix}",
                f"--log-file={self.valgrind_log}",
                python_binary(), os.path.join(BENCH, "servers", self.spec.script), "0", *self.spec.args]

    def start(self, timeout: float = START_TIMEOUT) -> CallgrindServer:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=run.REPO,
            env=self._environment(), preexec_fn=run.child_setup(None))
        log.close()
        run.ServerProcess.running.append(self)
        line = self._first_line(timeout)
        if line.startswith("READY "):
            self.port = int(line.split()[1])
            return self
        self.stop()
        if line.startswith("SKIP "):
            raise Skip(line[5:])
        raise Failure(f"server {self.spec.name} did not start under valgrind: {line or 'no output'};"
                      f" {self.log_tail()} {self.valgrind_tail()}")

    def valgrind_tail(self, lines: int = 3) -> str:
        try:
            with open(self.valgrind_log, errors="replace") as f:
                tail = f.read().strip().splitlines()[-lines:]
        except OSError:
            return ""
        return "valgrind: " + " | ".join(tail) if tail else ""

    def control(self, *args: str) -> None:
        """One callgrind_control command; it returns once valgrind has carried it out."""
        cmd = ["callgrind_control", f"--vgdb-prefix={self.vgdb_prefix}", *args, str(self.pid)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONTROL_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Failure(f"callgrind_control {' '.join(args)} got no answer in {CONTROL_TIMEOUT:.0f} s") from None
        if proc.returncode != 0 or "OK." not in proc.stdout:
            said = " ".join((proc.stdout + proc.stderr).split())
            raise Failure(f"callgrind_control {' '.join(args)} failed (status {proc.returncode}): {said}")

    def rest(self, quiet: float = 0.3, timeout: float = REST_TIMEOUT) -> None:
        """Wait until the server's CPU time has not moved for `quiet` seconds and none of its
        threads is runnable (a server waiting for a busy CPU is not at rest)."""
        deadline = time.monotonic() + timeout
        last, since = loadgen.proc_cpu(self.pid), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now_cpu = loadgen.proc_cpu(self.pid)
            if now_cpu != last or self.runnable():
                last, since = now_cpu, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
        raise Failure(f"the server did not come to rest within {timeout:.0f} s")

    def runnable(self) -> bool:
        """Whether any thread of the server is running or waiting for a CPU (state R)."""
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return False
        for task in tasks:
            try:
                with open(f"/proc/{self.pid}/task/{task}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "R":
                        return True
            except (OSError, IndexError):
                continue
        return False

    def begin(self) -> None:
        """Start counting, with the server at rest."""
        self.rest()
        self.control("--instr=on")
        self.counted_from = time.monotonic()

    def end(self) -> None:
        """Dump the count, once the server is at rest again."""
        self.counted_until = time.monotonic()
        self.rest()
        self.control("--dump")

    def instructions(self) -> int:
        """The instructions counted between begin() and end(), from the dump."""
        dumps = [name for name in os.listdir(self.work_dir) if re.fullmatch(r"callgrind\.out\.\d+", name)]
        if len(dumps) != 1:
            raise Failure(f"expected one callgrind dump in {self.work_dir}, found {len(dumps)}")
        with open(os.path.join(self.work_dir, dumps[0]), errors="replace") as f:
            return callgrind_total(f.read())


# --------------------------------------------------------------------------- the generator

def run_for(sel: selectors.BaseSelector, seconds: float, check: Callable[[float], object]) -> None:
    """Serve the generator's sockets for `seconds`, calling `check(now)` every 0.5 s (stall checks)."""
    now = time.monotonic()
    end, next_check = now + seconds, now + 0.5
    while now < end:
        loadgen.loop_once(sel, min(0.1, end - now))
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.5
            check(now)


def echo_phase(conns: list[loadgen.EchoConn], sel: selectors.BaseSelector, seconds: float) -> int:
    """Keep every connection's messages in flight for `seconds`, then wait for every echo.

    Starts and ends with nothing in flight; returns the number of messages echoed (and
    verified by the connections' checkers) in between.
    """
    before = sum(c.sent for c in conns)
    now = time.monotonic()
    for c in conns:
        c.limit = None
        c.progress_at, c.progress_done = now, c.done
        if c.sent == 0:
            c.start()  # also checks any bytes that came with the handshake response
        else:
            c.send_next(c.inflight)
    run_for(sel, seconds, lambda now: [c.check_progress(now) for c in conns])
    for c in conns:
        c.limit = c.sent
    while not all(c.idle() for c in conns):
        loadgen.loop_once(sel, 0.1)
        now = time.monotonic()
        for c in conns:
            c.check_progress(now)  # fails after loadgen.STALL_TIMEOUT without any echo
    return sum(c.sent for c in conns) - before


def drive_echo(scenario: str, server: CallgrindServer, opts: argparse.Namespace) -> int:
    conns_n, inflight, size, binary, k = loadgen.ECHO_SHAPES[scenario]
    raw_tcp, deflate = server.spec.raw_tcp, server.spec.deflate
    opened = loadgen.open_connections(server.port, conns_n, deflate=deflate, raw_tcp=raw_tcp, timeout=60)
    if deflate and any(o.deflate is None for o in opened):
        loadgen.close_all([o.sock for o in opened])
        raise Skip("server did not accept the permessage-deflate offer")
    sel = selectors.DefaultSelector()
    conns = [loadgen.EchoConn(o, sel, loadgen.build_ring(i, k, size, binary, o.deflate, raw_tcp), inflight, raw_tcp)
             for i, o in enumerate(opened)]
    if opts.warmup > 0:
        echo_phase(conns, sel, opts.warmup)
    server.begin()
    ops = echo_phase(conns, sel, opts.duration)
    server.end()
    loadgen.close_all([c.sock for c in conns], raw_tcp=raw_tcp)
    return ops


def churn_phase(port: int, seconds: float, parallel: int) -> int:
    """`parallel` clients open and close connections for `seconds`; then every connection
    in progress is completed.  Returns the number of connections completed."""
    sel = selectors.DefaultSelector()
    stats = {"done": 0}
    clients = [loadgen.ChurnClient(port, sel, stats) for _ in range(parallel)]
    run_for(sel, seconds, lambda now: [c.check_stuck(now) for c in clients])
    for c in clients:
        c.active = False
    while sel.get_map():
        loadgen.loop_once(sel, 0.1)
        now = time.monotonic()
        for c in clients:
            if c.sock.fileno() != -1:  # still in progress
                c.check_stuck(now)
    sel.close()
    return stats["done"]


def drive_churn(scenario: str, server: CallgrindServer, opts: argparse.Namespace) -> int:
    if opts.warmup > 0:
        churn_phase(server.port, opts.warmup, opts.parallel)
    server.begin()
    ops = churn_phase(server.port, opts.duration, opts.parallel)
    server.end()
    return ops


def drive_broadcast(scenario: str, server: CallgrindServer, opts: argparse.Namespace) -> int:
    opened = loadgen.open_connections(server.port, opts.clients, deflate=server.spec.deflate, timeout=120)
    if server.spec.deflate and any(o.deflate is None for o in opened):
        loadgen.close_all([o.sock for o in opened])
        raise Skip("server did not accept the permessage-deflate offer")
    sel = selectors.DefaultSelector()
    clients = [loadgen.BroadcastClient(o, sel) for o in opened]
    server.rest()  # every connection registered by the server before the first burst
    # The warm-up burst checks that every client gets every message and sizes the counted
    # bursts: about an eighth of the window each at the warm-up's (uninstrumented) pace,
    # so a window holds a few whole bursts however much slower instrumentation makes them.
    warm = max(2, int(20 * opts.warmup))
    s0, s1 = loadgen.run_burst(clients, sel, warm, server.pid, timeout=120)
    per_second = warm * len(clients) / max(1e-3, s1.time - s0.time)
    n = max(2, min(100_000, int(per_second * opts.duration / len(clients) / 8)))
    server.begin()
    end = time.monotonic() + opts.duration
    ops = 0
    while True:
        s0, s1 = loadgen.run_burst(clients, sel, n, server.pid, timeout=max(60.0, 10 * opts.duration))
        ops += s1.count  # every client received all n messages
        if time.monotonic() >= end:
            break
    server.end()
    loadgen.close_all([c.sock for c in clients])
    return ops


DRIVERS: dict[str, Callable[[str, CallgrindServer, argparse.Namespace], int]] = {
    "small": drive_echo, "pipelined": drive_echo, "large": drive_echo,
    "broadcast": drive_broadcast, "churn": drive_churn,
}


# --------------------------------------------------------------------------- measurements

@dataclass
class Measurement:
    scenario: str
    server: str
    ops: int
    instructions: int
    seconds: float  # the counted phase, wall clock: from instrumentation on until the last operation ended

    @property
    def per_op(self) -> float:
        return self.instructions / self.ops


def measure(scenario: str, spec: ServerSpec, opts: argparse.Namespace, work_dir: str) -> Measurement:
    """One server process under callgrind, one counted phase of one scenario."""
    server = CallgrindServer(spec, work_dir).start()
    try:
        try:
            ops = DRIVERS[scenario](scenario, server, opts)
        except (loadgen.BenchError, OSError) as exc:
            raise Failure(f"{type(exc).__name__}: {exc} ({server.log_tail(4)})") from None
        seconds = server.counted_until - server.counted_from
        if not server.alive():
            raise Failure(f"server died during the run; {server.log_tail()} {server.valgrind_tail()}")
        if ops <= 0:
            raise Failure("no operation completed in the counted phase")
        return Measurement(scenario, spec.name, ops, server.instructions(), seconds)
    finally:
        server.stop()


@dataclass
class Results:
    runs: dict[tuple[str, str], list[Measurement]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def per_op(self, scenario: str, server: str) -> float | None:
        values = [m.per_op for m in self.runs.get((scenario, server), [])]
        return statistics.median(values) if values else None


def servers_for(scenario: str, opts: argparse.Namespace) -> list[str]:
    spec = next(s for s in run.SCENARIOS if s.name == scenario)
    return [name for name in run.servers_of(spec, opts) if name in opts.server_list]


def run_all(opts: argparse.Namespace, results: Results, work_dir: str) -> None:
    for scenario in opts.scenario_list:
        for rep in range(opts.reps):
            for name in servers_for(scenario, opts):
                if name in results.skipped:
                    continue
                label = f"{scenario:<10} {name:<22}" + (f" rep {rep + 1}" if opts.reps > 1 else "")
                print(f"  {label} ...", end=" ", flush=True)
                where = os.path.join(work_dir, f"{scenario}-{name}-{rep}")
                try:
                    m = measure(scenario, run.spec_of(name, opts), opts, where)
                except Skip as exc:
                    results.skipped[name] = str(exc)
                    print(f"skipped: {exc}", flush=True)
                    continue
                except Failure as exc:
                    results.notes.append(f"FAILED {scenario} on {name}: {exc}")
                    print(f"FAILED: {exc}", flush=True)
                    continue
                finally:
                    shutil.rmtree(where, ignore_errors=True)  # dumps are large; the numbers are kept
                results.runs.setdefault((scenario, name), []).append(m)
                print(f"{m.per_op:,.0f} instructions per {UNITS[scenario]} ({m.ops:,} in {m.seconds:.1f} s)",
                      flush=True)


# --------------------------------------------------------------------------- the table

def counterpart(name: str) -> str:
    """The websockets server that a common server is compared with."""
    return "websockets+deflate" if name.endswith("+deflate") else "websockets"


def table_rows(results: Results, opts: argparse.Namespace) -> list[list[str]]:
    rows = [["scenario", "server", "ops", "instructions/op", "spread", "vs @base", "vs websockets"]]
    for scenario in opts.scenario_list:
        first = True
        for name in servers_for(scenario, opts):
            runs = results.runs.get((scenario, name))
            if not runs:
                continue
            per_op = results.per_op(scenario, name)
            values = [m.per_op for m in runs]
            spread = (max(values) - min(values)) / (2 * per_op) if len(values) > 1 else None
            common = name.startswith("common")
            base = results.per_op(scenario, name + "@base") if common and "@" not in name else None
            other = results.per_op(scenario, counterpart(name.removesuffix("@base"))) if common else None
            rows.append([
                f"{scenario} ({UNITS[scenario]})" if first else "", name,
                f"{statistics.median(m.ops for m in runs):,.0f}", f"{per_op:,.0f}",
                f"±{100 * spread:.2f}%" if spread is not None else "",
                f"{per_op / base:.4f}x" if base else "", f"{per_op / other:.3f}x" if other else "",
            ])
            first = False
    return rows


def print_table(results: Results, opts: argparse.Namespace) -> None:
    run.print_aligned(table_rows(results, opts), numeric={2, 3, 4, 5, 6})
    print("instructions/op = instructions the server process executed (callgrind, event Ir) per operation"
          " of the counted phase" + (", median of the repetitions; spread = (max-min)/2 relative to it" if opts.reps > 1
                                     else "") + ";")
    print("vs @base = common / common@base and vs websockets = common / websockets (the deflate ones for"
          " +deflate), both of instructions per operation: below 1, common executes fewer instructions.")
    for name, reason in results.skipped.items():
        print(f"note: {name} skipped: {reason}")
    for note in results.notes:
        print(f"note: {note}")


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Instructions per operation of the benchmark servers, under"
                                            " callgrind (see the module docstring).")
    p.add_argument("--scenarios", default=",".join(SCENARIO_NAMES),
                   help="comma-separated subset of: " + ",".join(SCENARIO_NAMES))
    p.add_argument("--servers", default=DEFAULT_SERVERS,
                   help=f"comma-separated subset of: {','.join(run.SERVERS)} (default {DEFAULT_SERVERS})")
    p.add_argument("--duration", type=float, default=4.0,
                   help="seconds of load in the counted phase (default 4; under callgrind the server runs"
                        " 4-40x slower than natively)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of uncounted warm-up (default 1)")
    p.add_argument("--clients", type=int, default=1000, help="broadcast: clients (default 1000, as run.py)")
    p.add_argument("--parallel", type=int, default=8, help="churn: parallel clients (default 8, as run.py)")
    p.add_argument("--reps", type=int, default=1, help="measurements per scenario and server (default 1)")
    p.add_argument("--baseline", metavar="DIR",
                   help="also measure the common/ of another checkout (say a git worktree of an older"
                        " commit) as common@base")
    opts = p.parse_args(argv)
    opts.scenario_list = [s for s in opts.scenarios.split(",") if s]
    opts.server_list = [s for s in opts.servers.split(",") if s]
    for s in opts.scenario_list:
        if s not in SCENARIO_NAMES:
            p.error(f"unknown scenario {s!r} (memory is not a CPU scenario)" if s == "memory"
                    else f"unknown scenario {s!r}")
    for s in opts.server_list:
        if s not in run.SERVERS:
            p.error(f"unknown server {s!r}")
    if opts.duration <= 0 or opts.warmup < 0 or opts.reps < 1 or opts.clients < 1 or opts.parallel < 1:
        p.error("--duration must be positive, --warmup not negative, --reps, --clients and --parallel at least 1")
    if opts.baseline:
        if not os.path.isfile(os.path.join(opts.baseline, "common", "__init__.py")):
            p.error(f"--baseline {opts.baseline}: no common/ package there")
        opts.baseline = os.path.abspath(opts.baseline)
        opts.server_list += [name + "@base" for name in opts.server_list if name.startswith("common")]
    return opts


def checkout_version(root: str) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "common")
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (commit + ("+dirty" if dirty else "")) or "?"


def valgrind_version() -> str:
    try:
        return subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "valgrind ?"


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"instructions.py: {' and '.join(missing)} not found; install valgrind (it includes"
              " callgrind_control), e.g. apt-get install valgrind", file=sys.stderr)
        return 2
    benchproto.raise_nofile_limit()
    signal.signal(signal.SIGTERM, run.interrupt)  # SIGTERM takes the Ctrl+C path: every server is killed
    base = f", common@base at {checkout_version(opts.baseline)} ({opts.baseline})" if opts.baseline else ""
    print(f"Python {sys.version.split()[0]} ({python_binary()}), {valgrind_version()}; common/ at"
          f" {checkout_version(run.REPO)}{base}; {opts.warmup:g} s warm-up + {opts.duration:g} s counted"
          f" per measurement", flush=True)
    results = Results()
    interrupted = False
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wsinstr-") as work_dir:
        try:
            run_all(opts, results, work_dir)
        except KeyboardInterrupt:
            interrupted = True
            results.notes.append("interrupted: partial results")
        finally:
            run.ServerProcess.stop_all()
    print_table(results, opts)
    print(f"total time {time.monotonic() - started:.0f} s")
    failed = any(note.startswith("FAILED") for note in results.notes)
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())

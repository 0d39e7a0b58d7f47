"""What ``python3 -m common inspect`` costs a connection: echoes through the inspector and direct.

    python3 bench/inspector.py [--seconds S] [--warmup S] [--repeat R] [--pin] [--json PATH]

Methodology
-----------
The echo server is run.py's ``common`` server (``bench/servers/common_echo.py``, on
127.0.0.1, port 0, its environment padded as run.py pads it); the inspector is
``python3 -m common inspect ws://127.0.0.1:ECHOPORT --port 0 --view-port 0``, and the view
is ``python3 bench/inspector.py --view PORT``: a WebSocket client of the inspector's feed
(``ws://127.0.0.1:PORT/feed``, with the view page's Origin, as a browser sends it) that
reads and discards every update.  Each is a process of its own, started afresh for every
repetition of every path, and killed by pid when it ends, on error and on Ctrl+C (children
also get PR_SET_PDEATHSIG).  The client is this process: one connection, one message in
flight, a blocking socket (as loadgen.py's small echo), its frames masked in advance by
loadgen.py's rings and every echo checked byte for byte by loadgen.py's ReplyChecker.

Paths:
  direct          the client connects to the echo server
  inspector       the client connects to the inspector, which relays to the echo server
  inspector+view  the same, with a view connected to the inspector's feed

Scenarios (one message in flight: a round trip is one message and its echo):
  small  32-byte text messages: round trips/s, mean and median round-trip latency
  large  1 MiB binary messages: the same, and MiB/s echoed (run.py's large keeps 2 in flight)

Each repetition runs the three paths in an order rotated every repetition, both scenarios
on the same processes, each a warm-up and then a window of --seconds; the table gives the
medians of the repetitions, and the ratios (through the inspector / direct) are the medians
of the same-repetition ratios, as in run.py.  Next to them: the CPU of the echo server, the
inspector and the view over the window (100% = one core), the echo server's and the
inspector's CPU microseconds per round trip, and bg, what every other process on the machine
used (in cores).

The benchmark's smoke test:  python3 -m pytest -q bench/test_bench.py -k inspect
"""

import os
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import loadgen  # noqa: E402
import run  # noqa: E402
from wsclient import OP_PING, OP_PONG, client_frame  # noqa: E402

REPO = run.REPO
PATHS = ["direct", "inspector", "inspector+view"]
# scenario: (title, payload bytes, binary, ring size)
SCENARIOS = {
    "small": ("small echo, 32 B text", 32, False, 256),
    "large": ("large echo, 1 MiB binary", 1 << 20, True, 4),
}
START_TIMEOUT = 20.0


class Failure(Exception):
    """A process or a connection failed; the message says how."""


# --------------------------------------------------------------------------- processes

class Child:
    """A process started for one repetition: ready once its output names its ports; stop() kills it by pid."""

    running = []  # every child started and not yet stopped, for the final cleanup

    def __init__(self, name, cmd, log_dir, cpu=None, padding=0):
        self.name, self.cmd, self.cpu, self.padding = name, cmd, cpu, padding
        self.log_path = os.path.join(log_dir, f"{name}-{len(os.listdir(log_dir))}.log")
        self.proc = None
        self.output = ""

    def start(self, ready):
        """Start, and read stdout until ``ready(output)`` is true (then return self) or it fails."""
        env = dict(os.environ)
        env["BENCH_LAYOUT"] = "x" * (self.padding + run.LAYOUT_PADDING - len(REPO))  # as run.py
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                         cwd=REPO, env=env, preexec_fn=run.child_setup(self.cpu))
        Child.running.append(self)
        deadline = time.monotonic() + START_TIMEOUT
        fd = self.proc.stdout.fileno()
        while not ready(self.output):
            left = deadline - time.monotonic()
            chunk = os.read(fd, 4096) if left > 0 and select.select([fd], [], [], left)[0] else b""
            if not chunk:
                self.stop()
                raise Failure(f"{self.name} did not start: {self.output.strip() or 'no output'}; {self.log_tail()}")
            self.output += chunk.decode(errors="replace")
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, polite=False):
        """Kill it; ``polite``: SIGTERM first and return what it printed until it exited."""
        if self.proc is None:
            return ""
        rest = run.stop_process(self.proc, polite)
        if self in Child.running:
            Child.running.remove(self)
        return rest.decode(errors="replace")

    def log_tail(self, lines=4):
        return run.read_log_tail(self.log_path, self.name, lines)

    @classmethod
    def stop_all(cls):
        for child in list(cls.running):
            child.stop()


def start_echo(log_dir, cpu, padding):
    cmd = [sys.executable, os.path.join(BENCH, "servers", "common_echo.py"), "0"]
    echo = Child("echo", cmd, log_dir, cpu, padding).start(lambda out: "\n" in out)
    if not echo.output.startswith("READY "):
        echo.stop()
        raise Failure(f"the echo server did not start: {echo.output.strip()}; {echo.log_tail()}")
    echo.port = int(echo.output.split()[1])
    return echo


RELAYING = re.compile(r"relaying ws://127\.0\.0\.1:(\d+)/ to ")
VIEW = re.compile(r"the view: open http://localhost:(\d+)/")


def start_inspector(echo_port, log_dir, cpu, padding):
    cmd = [sys.executable, "-m", "common", "inspect", f"ws://127.0.0.1:{echo_port}", "--port", "0", "--view-port", "0"]
    inspector = Child("inspector", cmd, log_dir, cpu, padding)
    inspector.start(lambda out: RELAYING.search(out) and VIEW.search(out))
    inspector.port = int(RELAYING.search(inspector.output).group(1))
    inspector.view_port = int(VIEW.search(inspector.output).group(1))
    return inspector


def start_view(view_port, log_dir, cpu):
    cmd = [sys.executable, os.path.abspath(__file__), "--view", str(view_port)]
    return Child("view", cmd, log_dir, cpu).start(lambda out: "READY" in out)


# --------------------------------------------------------------------------- the view

def view(port):
    """A view page's part, without the page: open the feed, read and discard every update until SIGTERM,
    then print how many updates came (one JSON line)."""
    import asyncio

    sys.path.insert(0, REPO)
    import common

    counts = {"messages": 0, "bytes": 0, "frames": 0, "dropped": 0}

    async def read_feed():
        url, origin = f"ws://127.0.0.1:{port}/feed", f"http://127.0.0.1:{port}"
        async with common.connect(url, origin=origin, max_size=None) as ws:
            await ws.recv()  # the snapshot: the inspector has counted this view among its viewers
            print("READY", flush=True)
            async for message in ws:
                counts["messages"] += 1
                counts["bytes"] += len(message)
                for event in json.loads(message):
                    if event["type"] == "frame":
                        counts["frames"] += 1
                    elif event["type"] == "dropped":
                        counts["dropped"] += event["count"]

    async def main():
        task = asyncio.ensure_future(read_feed())
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        print(json.dumps(counts), flush=True)

    asyncio.run(main())


# --------------------------------------------------------------------------- measuring

class Snapshot:
    """Time, and the CPU seconds of this process, of each child and of the whole machine."""

    def __init__(self, count, children):
        self.time = time.monotonic()
        self.count = count
        self.own = loadgen.own_cpu()
        self.cpu = {child.name: loadgen.proc_cpu(child.pid) for child in children}
        self.busy = loadgen.machine_busy()


def round_trips(port, scenario, warmup, seconds, children):
    """One connection, one message in flight, for warmup + seconds: the window's figures."""
    _, size, binary, k = SCENARIOS[scenario]
    opened = loadgen.open_connections(port, 1)[0]
    ring = loadgen.build_ring(0, k, size, binary, None, False)
    checker = loadgen.ReplyChecker(ring.expect, ring.frame_len, ring.expect_len,
                                   lambda i: ring.messages[i % ring.k], cyclic=True)
    sock = opened.sock
    try:
        return _round_trips(sock, opened.leftover, ring, checker, size, warmup, seconds, children)
    finally:
        sock.close()


def _round_trips(sock, leftover, ring, checker, size, warmup, seconds, children):
    sock.setblocking(True)
    sock.settimeout(loadgen.STALL_TIMEOUT)
    if leftover:
        checker.feed(leftover)
    latencies = []
    sent = 0
    t_measure = time.monotonic() + warmup
    t_end = t_measure + seconds
    s0 = None
    try:
        while True:
            now = time.monotonic()
            if s0 is None and now >= t_measure:
                s0 = Snapshot(checker.done, children)
            if now >= t_end:
                s1 = Snapshot(checker.done, children)
                break
            t0 = time.perf_counter()
            sock.sendall(ring.frames(sent, 1))
            sent += 1
            while checker.done < sent:
                data = sock.recv(loadgen.RECV_SIZE)
                if not data:
                    raise Failure("the connection was closed during the run")
                checker.feed(data)
                for opcode, payload in checker.controls:
                    if opcode == OP_PING:
                        sock.sendall(client_frame(OP_PONG, payload))
                checker.controls.clear()
            if s0 is not None:
                latencies.append(time.perf_counter() - t0)
    except TimeoutError:
        raise Failure(f"no echo within {loadgen.STALL_TIMEOUT:.0f} s") from None
    except loadgen.BenchError as exc:
        raise Failure(str(exc)) from None
    sock.setblocking(False)
    clean = loadgen.close_all([sock])
    seconds = s1.time - s0.time
    result = {
        "rate": (s1.count - s0.count) / seconds,
        "mib_s": (s1.count - s0.count) * size / (1 << 20) / seconds,
        "mean_us": 1e6 * statistics.fmean(latencies) if latencies else None,
        "median_us": 1e6 * statistics.median(latencies) if latencies else None,
        "count": s1.count - s0.count, "seconds": round(seconds, 3), "sent": sent, "clean_close": bool(clean),
        "client_cpu": (s1.own - s0.own) / seconds,
    }
    others = 0.0
    for name in s0.cpu:
        used = s1.cpu[name] - s0.cpu[name]
        others += used
        result[f"{name}_cpu"] = used / seconds
        result[f"{name}_us_per_rt"] = 1e6 * used / max(1, s1.count - s0.count)
    result["bg_cpu"] = max(0.0, (s1.busy - s0.busy) - (s1.own - s0.own) - others) / seconds
    return result


def run_path(path, opts, log_dir, padding, results, rep):
    """Start the processes of one path, measure every scenario through them, stop them."""
    server_cpu, client_cpu = (0, 1) if opts.pin else (None, None)
    children = []
    try:
        echo = start_echo(log_dir, server_cpu, padding)
        children.append(echo)
        port = echo.port
        if path != "direct":
            inspector = start_inspector(echo.port, log_dir, server_cpu, padding)
            children.append(inspector)
            port = inspector.port
            if path == "inspector+view":
                children.append(start_view(inspector.view_port, log_dir, client_cpu))
        for scenario in opts.scenario_list:
            result = round_trips(port, scenario, opts.warmup, opts.seconds, children)
            for child in children:
                if not child.alive():
                    raise Failure(f"{child.name} died during the run; {child.log_tail()}")
            results.setdefault((scenario, path), [None] * opts.repeat)[rep] = result
            if opts.verbose:
                print(f"  {scenario:<6} {path:<15} rep {rep + 1}: {run.fmt_value(result['rate'])} round trips/s,"
                      f" median {run.fmt_value(result['median_us'])} us", flush=True)
    finally:
        for child in reversed(children):
            out = child.stop(polite=child.name == "view")
            if child.name == "view" and out.strip():
                results.setdefault(("view", path), []).append(json.loads(out.strip().splitlines()[-1]))
            elif os.path.getsize(child.log_path):
                results.setdefault(("notes", None), []).append(f"{child.name} ({path}) wrote to stderr:"
                                                               f" {child.log_tail()}")


# --------------------------------------------------------------------------- the table

def values(results, scenario, path, key):
    return [r[key] for r in results.get((scenario, path), []) if r and r.get(key) is not None]


def paired(results, scenario, path, key):
    """Median over repetitions of key(path) / key(direct) in the same repetition."""
    mine, direct = results.get((scenario, path), []), results.get((scenario, "direct"), [])
    ratios = [a[key] / b[key] for a, b in zip(mine, direct) if a and b and a.get(key) and b.get(key)]
    return statistics.median(ratios) if ratios else None


def summarize(results, opts):
    rows = []
    for scenario in opts.scenario_list:
        for path in PATHS:
            if not values(results, scenario, path, "rate"):
                continue

            def med(key):
                return run.median_or_none(values(results, scenario, path, key))
            rows.append({
                "scenario": scenario, "title": SCENARIOS[scenario][0], "path": path,
                "reps": len(values(results, scenario, path, "rate")),
                "rate": med("rate"), "mib_s": med("mib_s"), "mean_us": med("mean_us"), "median_us": med("median_us"),
                "rate_ratio": paired(results, scenario, path, "rate") if path != "direct" else None,
                "latency_ratio": paired(results, scenario, path, "median_us") if path != "direct" else None,
                "echo_cpu": med("echo_cpu"), "echo_us_per_rt": med("echo_us_per_rt"), "inspector_cpu": med("inspector_cpu"), "view_cpu": med("view_cpu"),
                "inspector_us_per_rt": med("inspector_us_per_rt"), "client_cpu": med("client_cpu"),
                "bg_cpu": med("bg_cpu"),
            })
    return rows


def fmt_ratio(v):
    return "" if v is None else f"{v:.2f}x"


def print_table(rows, results, opts):
    header = ["scenario", "path", "round trips/s", "MiB/s", "mean us", "median us", "rt/s ratio", "latency ratio",
              "echo CPU", "echo us/rt", "insp CPU", "insp us/rt", "view CPU", "client CPU", "bg"]
    table = [header]
    last = None
    for r in rows:
        table.append([
            r["title"] if r["scenario"] != last else "", r["path"], run.fmt_value(r["rate"]),
            run.fmt_value(r["mib_s"]) if r["scenario"] == "large" else "",
            run.fmt_value(r["mean_us"]), run.fmt_value(r["median_us"]),
            fmt_ratio(r["rate_ratio"]), fmt_ratio(r["latency_ratio"]),
            run.fmt_pct(r["echo_cpu"]), run.fmt_value(r["echo_us_per_rt"]),
            run.fmt_pct(r["inspector_cpu"]) if r["inspector_cpu"] is not None else "",
            run.fmt_value(r["inspector_us_per_rt"]) if r["inspector_us_per_rt"] is not None else "",
            run.fmt_pct(r["view_cpu"]) if r["view_cpu"] is not None else "",
            run.fmt_pct(r["client_cpu"]), run.fmt_cores(r["bg_cpu"]),
        ])
        last = r["scenario"]
    run.print_aligned(table, numeric=set(range(2, len(header))))
    print(f"one connection, one message in flight; median of {opts.repeat} repetitions of {opts.seconds:g} s;"
          " ratios = through the inspector / direct, median of same-repetition ratios")
    print("(rt/s below 1 and latency above 1: slower through the inspector); latency = from the send of a message"
          " to its last echoed byte;")
    print("CPU = time over the window (100% = one core); echo/insp us/rt = the echo server's/the inspector's CPU"
          f" microseconds per round trip; bg = other processes, in cores (of {os.cpu_count()}).")
    for rep, counts in enumerate(results.get(("view", "inspector+view"), [])[:1]):
        # Every message sent and its echo are two data frames; each connection ends with two close frames.
        relayed = sum(2 * r["sent"] + 2 for (_, path), runs in results.items() if path == "inspector+view"
                      for r in runs[rep:rep + 1] if r and "sent" in r)
        print(f"the view received {counts['frames']:,} frame updates of the {relayed:,} frames relayed in"
              f" {counts['messages']:,} messages ({counts['bytes'] / 1e6:.1f} MB) in its first repetition,"
              f" {counts['dropped']:,} updates dropped")
    for note in results.get(("notes", None), []):
        print(f"note: {note}")


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Echo round trips through python3 -m common inspect and direct"
                                            " (see the module docstring).")
    p.add_argument("--seconds", type=float, default=2.0, help="measurement window per scenario (default 2)")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up before each window (default 0.5)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of every path (default 3)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of: "
                   + ",".join(SCENARIOS))
    p.add_argument("--pin", action="store_true", help="pin the echo server and the inspector to CPU 0, this"
                   " client and the view to CPU 1")
    p.add_argument("--json", metavar="PATH", help="also save every measurement and the summary as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print every measurement as it is made")
    p.add_argument("--view", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the view's process
    opts = p.parse_args(argv)
    opts.scenario_list = [s for s in opts.scenarios.split(",") if s]
    for s in opts.scenario_list:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    if opts.seconds <= 0 or opts.warmup < 0 or opts.repeat < 1:
        p.error("--seconds must be above 0, --warmup at least 0, --repeat at least 1")
    if opts.pin and (os.cpu_count() or 1) < 2:
        p.error("--pin needs at least 2 CPUs")
    return opts


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    opts = parse_args(argv)
    if opts.view is not None:
        view(opts.view)
        return 0
    signal.signal(signal.SIGTERM, interrupt)  # the same path as Ctrl+C: the finally kills every child
    if opts.pin:
        os.sched_setaffinity(0, {1})
    machine = run.describe_machine()
    print(f"Python {machine['python']}, {machine['cpus']} CPUs, common/ at {machine['common'] or '?'};"
          f" {opts.repeat} reps, {opts.warmup:g} s warm-up + {opts.seconds:g} s window", flush=True)
    started = time.monotonic()
    results = {}
    status = 0
    paddings = random.Random("inspect")
    with tempfile.TemporaryDirectory(prefix="wsbench-inspect-") as log_dir:
        try:
            for rep in range(opts.repeat):
                padding = paddings.randrange(run.LAYOUT_PADDING)
                for path in run.order_for_rep(PATHS, rep):
                    try:
                        run_path(path, opts, log_dir, padding, results, rep)
                    except (Failure, OSError) as exc:
                        status = 1
                        results.setdefault(("notes", None), []).append(f"FAILED {path} (rep {rep + 1}): {exc}")
                        print(f"  FAILED {path} rep {rep + 1}: {exc}", flush=True)
        except KeyboardInterrupt:
            status = 130
            results.setdefault(("notes", None), []).append("interrupted: partial results")
        finally:
            Child.stop_all()
    rows = summarize(results, opts)
    if rows:
        print_table(rows, results, opts)
    else:
        for note in results.get(("notes", None), []):
            print(f"note: {note}")
    print(f"total time {time.monotonic() - started:.0f} s")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"machine": machine, "options": vars(opts), "summary": rows,
                       "runs": [{"scenario": s, "path": p, "runs": r} for (s, p), r in results.items()]}, f, indent=1)
        print(f"saved {opts.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())

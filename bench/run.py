"""Side-by-side benchmark of WebSocket servers: common/ against websockets and a raw TCP floor.

    python3 bench/run.py [--quick] [--scenarios small,pipelined,...] [--servers common,websockets,tcp]
                         [--reps R] [--json PATH] [--pin] [--baseline DIR]

Methodology
-----------
Every server is a small script in bench/servers/ running in its own process; every
measurement is made by bench/loadgen.py, a standard-library load generator running in
another process.  This script only starts and kills processes and does the arithmetic.

Servers (each started as ``python3 bench/servers/NAME_echo.py 0 [--deflate]``, which prints
``READY <port>``):
  common              echo + broadcast trigger on common.serve, compression=None
  common+deflate      the same with compression="deflate"        (small echo, broadcast)
  websockets          the same on websockets.asyncio.server (optional: skipped if absent)
  websockets+deflate  the same with compression="deflate"        (small echo, broadcast)
  tcp                 asyncio-streams TCP echo, no WebSocket: the floor for echo scenarios
  streams             the least WebSocket echo on asyncio streams (one task, readexactly per
                      frame, no validation): the floor for a library on streams (small,
                      pipelined)

Scenarios:
  small      1 connection, 32-byte text, one message at a time: round trips/s
  pipelined  16 connections x 32 messages in flight, 32-byte text: messages/s
  large      1 connection, 1 MiB binary (client-masked), 2 in flight: MiB/s echoed
  broadcast  1,000 clients; one of them sends ``GO <n>``; the server calls its library's
             broadcast n times with 64-byte messages, yielding after each; deliveries/s
             counted by the clients, from the trigger until the last client has all n
  memory     N idle connections (2,000; --quick 1,000):
             (VmRSS after - VmRSS before) / N, in KiB
  churn      8 parallel clients: connect, handshake, close handshake, wait for the
             server to close TCP, again: connections/s

Fairness and honesty:
  * Each scenario runs R times (5; --quick 2) and the repetitions are interleaved: rep 1
    of every server, then rep 2 of every server (in a rotated order), and so on, so that
    slow drifts of the machine hit every server alike.  The table shows medians; the
    ratio is the median of the per-repetition ratios (same repetition, adjacent in time).
  * Throughput is measured over a fixed window (2 s; --quick 0.5 s) after a warm-up
    (0.5 s; --quick 0.15 s), counting only complete, verified messages.  The generator
    checks every byte it gets back and exits with an error if a server misbehaves.
  * Next to every figure: the CPU time of the generator (gen) and of the server (srv)
    during the window, as a fraction of one core, and the server's CPU microseconds per
    operation.  A server at ~100% with the generator well below it is the intended state:
    the server is the bottleneck.  In a ping-pong (small) both sides wait for each other,
    so neither is at 100%; srv us/op is then the steadier figure.  bg is what every other
    process on the machine used meanwhile (in cores): on a shared 2-core machine that is
    the main source of noise, and large bg values mean the numbers deserve less trust.
  * Every repetition starts each server afresh, with its environment padded to a random
    size that all servers of the repetition share: what a process allocated before it
    serves has moved timings by 20 % and more on the machine the figures come from (see
    LAYOUT_PADDING), so the repetitions sample environments rather than keep one.  A
    fresh process also keeps one repetition's leftover memory out of the next.
  * --pin pins the server to CPU 0 and the generator to CPU 1 (off by default: on a
    machine shared with other work, pinning can leave a process stuck behind a busy CPU).
  * --baseline DIR also runs common/ as it is in another checkout (``git worktree add DIR
    COMMIT``) as common@base, interleaved with the others: a change is measured before and
    after in the same run, and the lines under the table give common / common@base.
  * Every server process is killed (by pid) when its scenario ends, and in any case on
    exit, Ctrl+C or error; children also get PR_SET_PDEATHSIG so they die with us.

The benchmark's own tests (codec, refusal of wrong echoes, an end-to-end run):
    python3 -m pytest bench/test_bench.py
"""

import argparse
import ctypes
import json
import os
import platform
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
LOADGEN = os.path.join(BENCH, "loadgen.py")


# --------------------------------------------------------------------------- what runs

class ServerSpec:
    def __init__(self, name, script, args=(), raw_tcp=False, deflate=False, common_root=None):
        self.name, self.script, self.args = name, script, list(args)
        self.raw_tcp, self.deflate = raw_tcp, deflate
        self.common_root = common_root  # another checkout whose common/ the server imports

    def at(self, root):
        """The same server on the common/ of another checkout, named NAME@base."""
        return ServerSpec(self.name + "@base", self.script, self.args, self.raw_tcp, self.deflate, root)


# Every repetition starts each server afresh, its environment padded by a random 0 to
# LAYOUT_PADDING bytes (the same for every server of the repetition). What a process
# allocates and frees before it serves can change its costs for good: here, glibc's
# malloc maps every 256 KiB asyncio read buffer with mmap until something has freed a
# block larger than that, and the environment's size was enough to decide it (one
# server's CPU per churn connection went from 198 to 247 us with 2,100 more bytes of
# environment; a change to a function churn never calls made it 20 % slower, with the
# same instruction count under callgrind, which does not see the system calls).
# common/connection.py now settles that one; repetitions still sample environments, so
# that a fixed one cannot hide the next effect of the kind.
LAYOUT_PADDING = 4096

SERVERS = {
    "common": ServerSpec("common", "common_echo.py"),
    "common+deflate": ServerSpec("common+deflate", "common_echo.py", ["--deflate"], deflate=True),
    "websockets": ServerSpec("websockets", "websockets_echo.py"),
    "websockets+deflate": ServerSpec("websockets+deflate", "websockets_echo.py", ["--deflate"], deflate=True),
    "tcp": ServerSpec("tcp", "tcp_echo.py", raw_tcp=True),
    "streams": ServerSpec("streams", "streams_echo.py"),
}


class Scenario:
    def __init__(self, name, title, servers, target, higher_is_better=True):
        self.name, self.title, self.servers = name, title, servers
        self.target = target  # required ratio common / websockets
        self.higher_is_better = higher_is_better


SCENARIOS = [
    Scenario("small", "small echo", ["tcp", "streams", "common", "websockets", "common+deflate", "websockets+deflate"], 1.3),
    Scenario("pipelined", "pipelined", ["tcp", "streams", "common", "websockets"], 2.0),
    Scenario("large", "large 1 MiB", ["tcp", "common", "websockets"], 0.5),
    Scenario("broadcast", "broadcast", ["common", "websockets", "common+deflate", "websockets+deflate"], 1.5),
    Scenario("memory", "idle memory", ["common", "websockets"], 0.5, higher_is_better=False),
    Scenario("churn", "churn", ["common", "websockets"], 1.5),
]


class Skip(Exception):
    """This server cannot take part (missing library, unsupported option)."""


class Failure(Exception):
    """A server or the generator failed; the message says how."""


# --------------------------------------------------------------------------- processes

def child_setup(cpu):
    """preexec_fn for every child: die with us (PR_SET_PDEATHSIG), optionally pin to a CPU."""
    def setup():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
    return setup


def stop_process(proc, polite=False):
    """Stop a child started with stdout=PIPE, whatever state it is in, and close its stdout: SIGKILL, or with
    ``polite`` SIGTERM first and up to 5 s to exit; return what it printed meanwhile (bytes, empty unless polite)."""
    rest = b""
    if polite and proc.poll() is None:
        proc.terminate()
        try:
            rest, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    proc.stdout.close()
    return rest


def read_log_tail(path, label, lines):
    """The last lines of a child's stderr log, joined on one line for an error message."""
    try:
        with open(path, errors="replace") as f:
            tail = f.read().strip().splitlines()[-lines:]
    except OSError:
        return ""
    return f"{label} log: " + " | ".join(tail) if tail else f"{label} log empty"


class ServerProcess:
    """One running benchmark server; stop() kills it by pid, whatever state it is in."""

    running = []  # every server started and not yet stopped, for the final cleanup

    def __init__(self, spec, log_dir, cpu=None, padding=0):
        self.spec, self.cpu, self.padding = spec, cpu, padding
        self.log_path = os.path.join(log_dir, f"{spec.name}-{len(os.listdir(log_dir))}.log")
        self.proc = None
        self.port = None

    def start(self, timeout=20.0):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(BENCH, "servers", self.spec.script), "0", *self.spec.args],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO,
            env=self._environment(), preexec_fn=child_setup(self.cpu))
        log.close()
        ServerProcess.running.append(self)
        line = self._first_line(timeout)
        if line.startswith("READY "):
            self.port = int(line.split()[1])
            return self
        self.stop()
        if line.startswith("SKIP "):
            raise Skip(line[5:])
        raise Failure(f"server {self.spec.name} did not start: {line or 'no output'}; {self.log_tail()}")

    def _environment(self):
        """Ours, plus which common/ to import, padded to the same size for every server of a
        repetition: the environment's size changes what the process allocates first (see LAYOUT_PADDING)."""
        env = dict(os.environ)
        root = env["BENCH_COMMON_ROOT"] = self.spec.common_root or REPO
        env["BENCH_LAYOUT"] = "x" * (self.padding + LAYOUT_PADDING - len(root))
        return env

    def _first_line(self, timeout):
        """The ready line, read without ever blocking past the timeout."""
        deadline = time.monotonic() + timeout
        data = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in data and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").split("\n")[0].strip()

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        stop_process(self.proc)
        if self in ServerProcess.running:
            ServerProcess.running.remove(self)

    def log_tail(self, lines=8):
        return read_log_tail(self.log_path, "server", lines)

    def log_is_empty(self):
        """A benchmark server is silent on stderr unless something went wrong."""
        try:
            return os.path.getsize(self.log_path) == 0
        except OSError:
            return True

    @classmethod
    def stop_all(cls):
        for server in list(cls.running):
            server.stop()


def run_loadgen(scenario, server, opts):
    """Run one measurement in a fresh generator process; return its result dict."""
    cmd = [sys.executable, LOADGEN, scenario.name, "--port", str(server.port), "--server-pid", str(server.pid),
           "--warmup", str(opts.warmup), "--duration", str(opts.duration),
           "--clients", str(opts.clients), "--connections", str(opts.connections),
           "--settle", str(0.3 if opts.quick else 0.5)]
    if server.spec.raw_tcp:
        cmd.append("--raw-tcp")
    if server.spec.deflate:
        cmd.append("--deflate")
    budget = 90 + 8 * (opts.warmup + opts.duration)  # generous: opening 2,000 connections, bursts
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, cwd=REPO,
                              stdin=subprocess.DEVNULL, preexec_fn=child_setup(1 if opts.pin else None))
    except subprocess.TimeoutExpired:
        raise Failure(f"load generator still running after {budget:.0f} s (killed)") from None
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        last = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise Failure(f"load generator exited {proc.returncode} without a result: {last[0]}") from None
    if "error" in result:
        raise Failure(f"{result['error']} ({server.log_tail(4)})")
    if "skip" in result:
        raise Skip(result["skip"])
    if not server.alive():
        raise Failure(f"server died during the run; {server.log_tail()}")
    return result


# --------------------------------------------------------------------------- the run

class Results:
    """Per scenario and server: the list of per-repetition results (None when a rep failed)."""

    def __init__(self):
        self.runs = {}   # (scenario, server) -> [result or None, ...]
        self.skipped = {}  # server -> reason (for the rest of the run)
        self.notes = []

    def add(self, scenario, server, rep, result):
        runs = self.runs.setdefault((scenario, server), [])
        runs.extend([None] * (rep + 1 - len(runs)))
        runs[rep] = result

    def values(self, scenario, server, key="value"):
        return [r[key] for r in self.runs.get((scenario, server), []) if r and r.get(key) is not None]


def order_for_rep(names, rep):
    """Rotate the server order every repetition so no server always goes first."""
    k = rep % len(names) if names else 0
    return names[k:] + names[:k]


def run_scenario(scenario, servers, opts, results, log_dir):
    names = [s for s in servers_of(scenario, opts) if s in servers and s not in results.skipped]
    paddings = random.Random(f"{opts.seed}-{scenario.name}")
    for rep in range(opts.reps):
        padding = paddings.randrange(LAYOUT_PADDING)  # one per repetition, shared by its servers
        for name in order_for_rep(names, rep):
            if name in results.skipped:
                continue
            server = start_server(name, opts, results, log_dir, padding)
            if server is None:
                continue
            try:
                result = measure(scenario, server, opts, results, rep)
            finally:
                check_log(server, scenario, results)
                server.stop()
            if result is not None:
                progress(scenario, name, rep, result, opts)


def start_server(name, opts, results, log_dir, padding=0):
    try:
        return ServerProcess(spec_of(name, opts), log_dir, 0 if opts.pin else None, padding).start()
    except Skip as exc:
        results.skipped[name] = str(exc)
    except Failure as exc:
        results.notes.append(f"{name}: {exc}")
    return None


def measure(scenario, server, opts, results, rep):
    name = server.spec.name
    try:
        result = run_loadgen(scenario, server, opts)
    except Skip as exc:
        results.skipped[name] = str(exc)
        return None
    except Failure as exc:
        results.add(scenario.name, name, rep, None)
        results.notes.append(f"FAILED {scenario.name} on {name} (rep {rep + 1}): {exc}")
        print(f"  FAILED {scenario.name:<10} {name:<19} rep {rep + 1}: {exc}", flush=True)
        return None
    results.add(scenario.name, name, rep, result)
    return result


def check_log(server, scenario, results):
    if not server.log_is_empty():
        results.notes.append(f"{server.spec.name} wrote to stderr during {scenario.name}: {server.log_tail(4)}")


def progress(scenario, name, rep, result, opts):
    if opts.verbose:
        print(f"  {scenario.name:<10} {name:<19} rep {rep + 1}: {fmt_value(result['value'])} {result['unit']}"
              f"  gen {fmt_pct(result['gen_cpu'])} srv {fmt_pct(result['srv_cpu'])} bg {fmt_cores(result.get('bg_cpu'))}",
              flush=True)


# --------------------------------------------------------------------------- the table

def baseline_for(name, present):
    """Ratios are against websockets (the deflate one for deflate columns), else common."""
    deflate = name.removesuffix("@base").endswith("+deflate")
    candidates = (["websockets+deflate"] if deflate else []) + ["websockets", "common"]
    for candidate in candidates:
        if candidate in present and candidate != name:
            return candidate
    return None


def paired_ratio(results, scenario, name, base, key="value"):
    """Median over repetitions of key(name) / key(base) in the same repetition."""
    mine = results.runs.get((scenario, name), [])
    theirs = results.runs.get((scenario, base), [])
    ratios = [a[key] / b[key] for a, b in zip(mine, theirs) if a and b and a.get(key) is not None and b.get(key)]
    return statistics.median(ratios) if ratios else None


def fmt_value(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_pct(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def fmt_cores(v):
    return "-" if v is None else f"{v:.2f}"


def median_or_none(values):
    return statistics.median(values) if values else None


def summarize(results, opts):
    """Medians, spreads and ratios, as rows for the table and for --json."""
    rows = []
    for scenario in SCENARIOS:
        names = [s for s in servers_of(scenario, opts) if s in opts.server_list]
        present = [s for s in names if results.values(scenario.name, s)]
        for name in names:
            values = results.values(scenario.name, name)
            if not values:
                continue
            med = statistics.median(values)
            base = baseline_for(name, present)
            ratio = paired_ratio(results, scenario.name, name, base) if base else None
            cpu_ratio = paired_ratio(results, scenario.name, base, name, "srv_us_per_op") if base else None
            rows.append({
                "scenario": scenario.name, "title": scenario.title, "server": name,
                "unit": next(r["unit"] for r in results.runs[(scenario.name, name)] if r),
                "median": med, "min": min(values), "max": max(values), "reps": len(values),
                "spread": (max(values) - min(values)) / (2 * med) if med else 0.0,
                "baseline": base, "ratio": ratio, "cpu_ratio": cpu_ratio,
                "target": target_status(scenario, name, base, ratio),
                "gen_cpu": median_or_none(results.values(scenario.name, name, "gen_cpu")),
                "srv_cpu": median_or_none(results.values(scenario.name, name, "srv_cpu")),
                "bg_cpu": median_or_none(results.values(scenario.name, name, "bg_cpu")),
                "srv_us_per_op": median_or_none(results.values(scenario.name, name, "srv_us_per_op")),
                "values": values,
                **against_own_baseline(results, scenario.name, name, present),
            })
    return rows


def against_own_baseline(results, scenario, name, present):
    """For common with --baseline: its paired ratios (throughput, cpu) to common@base."""
    base = name + "@base"
    if base not in present:
        return {}
    return {"vs_base": paired_ratio(results, scenario, name, base),
            "cpu_vs_base": paired_ratio(results, scenario, base, name, "srv_us_per_op")}


def target_status(scenario, name, base, ratio):
    """The goal for common/ against websockets, and whether this run met it."""
    if name != "common" or base != "websockets" or ratio is None:
        return None
    sign = ">=" if scenario.higher_is_better else "<="
    met = ratio >= scenario.target if scenario.higher_is_better else ratio <= scenario.target
    return f"{sign}{scenario.target:g}x {'ok' if met else 'MISS'}"


def print_aligned(table, numeric):
    """Print rows of cells as columns, the first row as a header; ``numeric`` columns align right."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    print()
    for i, row in enumerate(table):
        cells = [c.rjust(w) if j in numeric else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()


def print_table(rows, results):
    header = ["scenario", "server", "median", "unit", "spread", "ratio", "vs", "target",
              "gen CPU", "srv CPU", "srv us/op", "cpu ratio", "bg"]
    table = [header]
    last = None
    for r in rows:
        table.append([
            r["title"] if r["scenario"] != last else "", r["server"], fmt_value(r["median"]), r["unit"],
            f"±{100 * r['spread']:.0f}%", f"{r['ratio']:.2f}x" if r["ratio"] is not None else "",
            r["baseline"] or "", r["target"] or "", fmt_pct(r["gen_cpu"]), fmt_pct(r["srv_cpu"]),
            fmt_value(r["srv_us_per_op"]), f"{r['cpu_ratio']:.2f}x" if r["cpu_ratio"] is not None else "",
            fmt_cores(r["bg_cpu"]),
        ])
        last = r["scenario"]
    print_aligned(table, numeric={2, 4, 5, 8, 9, 10, 11, 12})
    print("median of the repetitions; spread = (max-min)/2 relative to the median; ratio = median of"
          " same-repetition ratios to the server named in 'vs';")
    print("gen/srv CPU = generator/server CPU time over the window (100% = one core); srv us/op = server CPU"
          " microseconds per operation;")
    print("cpu ratio = the baseline's srv us/op over this server's (same repetition): the throughput ratio"
          " the servers' own costs imply, which other load on the machine disturbs much less;")
    print("bg = CPU used by other processes on the machine during the window, in cores (of"
          f" {os.cpu_count()}).")
    busy = [r["gen_cpu"] for r in rows if r["gen_cpu"] is not None and r["gen_cpu"] > 0.9]
    if busy:
        results.notes.append("the generator used more than 90% of a core in some scenarios: "
                             "there its figures are a lower bound for the server")
    bg = [r["bg_cpu"] for r in rows if r["bg_cpu"] is not None]
    if bg and statistics.median(bg) > 0.25:
        results.notes.append(
            f"other processes kept {statistics.median(bg):.2f} of {os.cpu_count()} CPUs busy during the windows"
            " (median): throughput figures and their ratios are noisy; the cpu ratio column is the steadier"
            " comparison")
    for r in rows:
        if r.get("vs_base") is not None:
            cpu = f"{r['cpu_vs_base']:.2f}x" if r.get("cpu_vs_base") is not None else "-"
            print(f"{r['title']}: {r['server']} / {r['server']}@base = {r['vs_base']:.2f}x (cpu ratio {cpu})")
    for name, reason in results.skipped.items():
        print(f"note: {name} skipped: {reason}")
    for note in results.notes:
        print(f"note: {note}")


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="WebSocket server benchmark (see the module docstring).")
    p.add_argument("--quick", action="store_true", help="2 repetitions, short windows: about a minute")
    p.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                   help="comma-separated subset of: " + ",".join(s.name for s in SCENARIOS))
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of: " + ",".join(SERVERS))
    p.add_argument("--reps", type=int, help="repetitions per scenario and server (default 5, --quick 2)")
    p.add_argument("--duration", type=float, help="measurement window in seconds (default 2, --quick 0.5)")
    p.add_argument("--warmup", type=float, help="warm-up before each window in seconds (default 0.5, --quick 0.15)")
    p.add_argument("--connections", type=int, help="memory: idle connections (default 2000, --quick 1000)")
    p.add_argument("--clients", type=int, default=1000, help="broadcast: clients (default 1000)")
    p.add_argument("--json", metavar="PATH", help="also save every measurement and the summary as JSON")
    p.add_argument("--pin", action="store_true", help="pin the server to CPU 0 and the generator to CPU 1")
    p.add_argument("--seed", default="paddings", help="seed of the random environment paddings (default: fixed,"
                   " so that two runs sample the same ones)")
    p.add_argument("--baseline", metavar="DIR",
                   help="also measure the common/ of another checkout (say a git worktree of an older"
                        " commit) as common@base, interleaved with the rest: before and after in one run")
    p.add_argument("-v", "--verbose", action="store_true", help="print every measurement as it is made")
    opts = p.parse_args(argv)
    opts.reps = opts.reps or (2 if opts.quick else 5)
    opts.duration = opts.duration or (0.5 if opts.quick else 2.0)
    opts.warmup = opts.warmup if opts.warmup is not None else (0.15 if opts.quick else 0.5)
    opts.connections = opts.connections or (1000 if opts.quick else 2000)
    known = {s.name for s in SCENARIOS}
    opts.scenario_list = [s for s in opts.scenarios.split(",") if s]
    opts.server_list = [s for s in opts.servers.split(",") if s]
    for s in opts.scenario_list:
        if s not in known:
            p.error(f"unknown scenario {s!r}")
    for s in opts.server_list:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}")
    if opts.pin and (os.cpu_count() or 1) < 2:
        p.error("--pin needs at least 2 CPUs")
    if opts.baseline:
        if not os.path.isfile(os.path.join(opts.baseline, "common", "__init__.py")):
            p.error(f"--baseline {opts.baseline}: no common/ package there")
        opts.baseline = os.path.abspath(opts.baseline)
        opts.server_list += [name + "@base" for name in opts.server_list if name.startswith("common")]
    return opts


def servers_of(scenario, opts):
    """The scenario's servers, with NAME@base after each common server when --baseline is given."""
    names = []
    for name in scenario.servers:
        names.append(name)
        if opts.baseline and name.startswith("common"):
            names.append(name + "@base")
    return names


def spec_of(name, opts):
    if name.endswith("@base"):
        return SERVERS[name[:-len("@base")]].at(opts.baseline)
    return SERVERS[name]


def raise_nofile_limit():
    sys.path.insert(0, BENCH)
    import benchproto
    return benchproto.raise_nofile_limit()


def describe_machine():
    try:
        import websockets
        ws_version = websockets.__version__
    except ImportError:
        ws_version = None
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "websockets": ws_version, "common": common_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def common_version():
    """The commit common/ was measured at, with '+dirty' if its files differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "common")
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    opts = parse_args(argv)
    raise_nofile_limit()  # inherited by the children
    # SIGTERM takes the same path as Ctrl+C: the finally below kills every server.
    signal.signal(signal.SIGTERM, interrupt)
    results = Results()
    scenarios = [s for s in SCENARIOS if s.name in opts.scenario_list]
    machine = describe_machine()
    print(f"Python {machine['python']}, {machine['cpus']} CPUs, common/ at {machine['common'] or '?'},"
          f" websockets {machine['websockets'] or 'not installed'};"
          f" {opts.reps} reps, {opts.warmup:g} s warm-up + {opts.duration:g} s window", flush=True)
    started = time.monotonic()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="wsbench-") as log_dir:
        try:
            for scenario in scenarios:
                print(f"{scenario.title} ...", end="\n" if opts.verbose else " ", flush=True)
                t0 = time.monotonic()
                run_scenario(scenario, opts.server_list, opts, results, log_dir)
                print(f"{'  done in ' if opts.verbose else ''}{time.monotonic() - t0:.0f} s", flush=True)
        except KeyboardInterrupt:
            interrupted = True
            results.notes.append("interrupted: partial results")
        finally:
            ServerProcess.stop_all()
    rows = summarize(results, opts)
    print_table(rows, results)
    print(f"total time {time.monotonic() - started:.0f} s")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"machine": machine, "options": {k: v for k, v in vars(opts).items()},
                       "summary": rows, "skipped": results.skipped, "notes": results.notes,
                       "runs": [{"scenario": sc, "server": sv, "runs": runs} for (sc, sv), runs in results.runs.items()]},
                      f, indent=1)
        print(f"saved {opts.json}")
    failed = any(note.startswith("FAILED") for note in results.notes)
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())

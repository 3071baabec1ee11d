"""Hub benchmark: tinymorph's hub vs the Node reference y-websocket server, same load, one run.

    python -m bench.hub [--quick] [--no-b4] [--no-node] [--only paced|burst] [--reps N] [--also-delay-ms MS]
    python -m bench.hub --serve [--reps N]

``--serve``: 20 people typing 50 edits/s each against the hub exactly as ``make serve`` starts it
(embedding graph on, worker processes beside it) and the same hub with the graph off, beside the
Node server: keystroke p99 and server CPU per delivered update, side by side. With the graph on,
a writer in another room pauses just before each run, so that document's graph is rebuilt while
this room types. The workers' own CPU (the embedding model) is shown apart: it is not the hub
process's. ``--baseline DIR`` adds the same two configurations run from another checkout.

1. Fan-out load (tests/js/loadgen.mjs: N stock y-websocket clients in one node process, each
   making M edits to the `content` Y.Text of one document), paced and burst, against
   - tinymorph:  `python -m collab serve` on SQLite with its defaults: durable update log on, group
                 commit with the default commit delay (see collab/journal.py), and
   - node:       @y/websocket-server@0.1.1 (in-memory, no persistence: the cheapest baseline), and,
                 paced only, tinymorph with ``--also-delay-ms`` (default 0: a commit per update, the
                 lowest latency), to show what the commit delay trades.
   Every server first takes an unmeasured warm-up burst, so the rows compare steady states (V8
   needs thousands of updates to optimise the Node server; Python has no such warm-up).
   Reported: deliveries/s (one delivery = one edit arriving at one other client), p50/p99
   propagation latency (sender's insert -> receiver's doc update, one process so one clock),
   and server CPU per delivered update (utime+stime from /proc/PID/stat around the traffic only:
   connecting and syncing happen before the first reading, closing after the second).
2. B4: the automerge-paper trace (259,778 single-character edits) replayed
   - raw:  into a local pycrdt Doc, one transaction per edit (no network, no log), and
   - hub:  as the 259,778 updates that replay produces, sent one websocket message each over one
           connection as fast as the socket takes them, until a second (JS) client holds the
           trace's endContent. The hub only broadcasts after commit, so that is also durable.
   Target: hub <= 2x raw. The same replay against the Node server is shown for scale.

Prints tables; asserts nothing about speed. All traffic is to 127.0.0.1; servers run in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from collab.config import Settings
from collab.testing import HubProcess, apply_patches, load_trace
from collab.updates import decode_state_vector

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"  # one node_modules for the interop tests and this bench
LOADGEN = JS_DIR / "loadgen.mjs"
NODE_SERVER = JS_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- servers -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


class Server:
    name: str
    proc: subprocess.Popen
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def new_doc(self, title: str) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class HubServer(Server):
    """tinymorph's hub exactly as users start it, with its durable log on SQLite."""

    name = "tinymorph"

    def __init__(self, workdir: Path, commit_delay_ms: float | None = None, *, graph: bool = False,
                 name: str | None = None, source: Path | None = None) -> None:
        """``commit_delay_ms``: None keeps the hub's default. ``graph``: False turns the embedding
        graph off (it is not part of the y-websocket path compared with Node, which has nothing
        like it); True is ``make serve``'s default. ``source``: run the hub from another checkout
        (e.g. ``git worktree add /tmp/before main``) to compare versions in one run."""
        data = workdir / f"hub-data-{(name or 'default').replace(' ', '-')}"
        env = {} if graph else {"TINYMORPH_GRAPH_ENABLED": "false"}
        self.graph = graph
        if name:
            self.name = name
        if commit_delay_ms is not None:
            self.name = f"tm {commit_delay_ms:g}ms"
            data = workdir / f"hub-data-{commit_delay_ms:g}ms"
            env["TINYMORPH_COMMIT_DELAY_MS"] = str(commit_delay_ms)
        launcher = None
        if source is not None:
            boot = f"import sys; sys.path.insert(0, {str(source)!r}); from collab.cli import main; sys.exit(main())"
            launcher = [sys.executable, "-c", boot]
        self.hub = HubProcess(data, db=f"sqlite:///{data / 'bench.db'}", env=env, launcher=launcher).start(timeout=60)
        self.proc, self.port = self.hub.proc, self.hub.port

    def new_doc(self, title: str) -> str:
        # A document must exist before anyone joins (open auth mode: no token needed).
        return self.hub.create_doc(title)[0]

    def workers_cpu(self) -> float:
        """CPU of the hub's worker processes (its children): the model work moved out of it."""
        return sum(cpu_of(pid) for pid in _children(self.proc.pid))

    def stop(self) -> None:
        self.hub.stop()


class NodeServer(Server):
    """The reference: @y/websocket-server 0.1.1's own server.js, in memory (no YPERSISTENCE)."""

    name = "node"

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log = open(workdir / "node.log", "ab")
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port)}
        env.pop("YPERSISTENCE", None)
        self.proc = subprocess.Popen([node_bin(), str(NODE_SERVER)], cwd=JS_DIR, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)

    def new_doc(self, title: str) -> str:
        return f"{title}-{uuid.uuid4().hex[:8]}"  # any room name exists on first join


def node_bin() -> str:
    node = shutil.which("node")
    if node is None or not NODE_SERVER.is_file() or not (JS_DIR / "node_modules" / "yjs").is_dir():
        raise SystemExit("bench.hub needs node and the npm packages: run `make js-deps` (npm ci in tests/js)")
    return node


# -- fan-out load --------------------------------------------------------------------------------

@dataclass
class Scenario:
    label: str
    mode: str  # paced | burst
    clients: int
    edits: int
    rate: float = 10.0  # edits/s per client, paced only


@dataclass
class LoadResult:
    scenario: Scenario
    server: str
    deliveries: int = 0
    seconds: float = 0.0
    per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s: float = 0.0
    workers_cpu_s: float = 0.0
    converged: bool = False
    error: str | None = None

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.cpu_s / self.deliveries * 1e6 if self.deliveries else float("nan")

    def cpu_ratio(self, other: "LoadResult") -> float:
        """CPU per delivery relative to ``other`` (the Node server's): the target is <= 1.0."""
        theirs = other.cpu_us_per_delivery
        return self.cpu_us_per_delivery / theirs if theirs else float("nan")


class LineProc:
    """A child speaking JSON lines; read with a deadline."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)

    def read(self, timeout: float) -> dict:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the load generator")
            if sel.select(left):
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("load generator exited: " + self.proc.stderr.read()[-1500:])
                msg = json.loads(line)
                if msg.get("ev") == "error":
                    raise RuntimeError(msg["error"])
                return msg

    def say(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.say("quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: What another room's writer leaves behind just before the measured typing starts: their pause
#: makes the hub rebuild that document's embedding graph (debounced) while this room types, as
#: on any hub with more than one document. (Nothing else in the load touches the graph: the typing
#: room never pauses long enough.)
OTHER_ROOM = "\n\n".join(f"Paragraph {i}: the harbour was quiet that morning, and Mara counted the boats "
                         f"that had not come back from the storm, {i} of them, one by one." for i in range(24))


def _other_room_pauses(server: "HubServer") -> None:
    from collab.client import HubClient

    doc = server.new_doc("other room")

    async def write() -> None:
        async with HubClient(server.ws_url, doc) as c:
            await c.synced()
            c.text.insert(0, OTHER_ROOM)
            await c.flush()

    asyncio.run(write())


def run_load(server: Server, sc: Scenario, timeout: float) -> LoadResult:
    res = LoadResult(sc, server.name)
    doc = server.new_doc(f"bench-{sc.mode}")
    gen = LineProc([node_bin(), str(LOADGEN), "--url", server.ws_url, "--doc", doc, "--clients", str(sc.clients),
                    "--edits", str(sc.edits), "--mode", sc.mode, "--rate", str(sc.rate), "--timeout", str(timeout)])
    try:
        gen.read(timeout)  # ready: every client connected and synced
        if isinstance(server, HubServer) and server.graph:
            _other_room_pauses(server)
        cpu0 = server.cpu()
        workers0 = server.workers_cpu() if isinstance(server, HubServer) else 0.0
        gen.say("go")
        out = gen.read(timeout + 30)
        res.cpu_s = server.cpu() - cpu0
        if isinstance(server, HubServer):
            if server.graph:  # the rebuild is debounced until the typing stops: let it count
                time.sleep(Settings().graph_debounce_s + 1.0)
            res.workers_cpu_s = server.workers_cpu() - workers0
        res.deliveries = out["deliveries"]
        res.seconds = out["seconds"]
        res.per_s = out["deliveriesPerS"]
        res.p50_ms, res.p99_ms = out["p50ms"], out["p99ms"]
        res.converged = out["converged"]
    except (RuntimeError, TimeoutError, ValueError) as exc:
        res.error = str(exc)[:300]
    finally:
        gen.close()
    return res


# -- B4 trace ------------------------------------------------------------------------------------

def replay_raw(trace: dict, collect: bool = False):
    """Apply every edit to a pycrdt Doc, one transaction each; optionally collect the updates."""
    import pycrdt

    doc = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    frames: list[bytes] = []
    if collect:
        doc.observe(lambda ev: frames.append(pycrdt.create_update_message(ev.update)))
    t0 = time.perf_counter()
    c0 = time.process_time()
    # The trace is all ASCII, so its code-point positions equal pycrdt's (UTF-8) indices.
    for txn in trace["txns"]:
        with doc.transaction():
            apply_patches(text, txn["patches"])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if str(text) != trace["endContent"]:
        raise AssertionError("raw replay did not reproduce endContent")
    return wall, cpu, frames, total_clock(doc.get_state())


def total_clock(state_vector: bytes) -> int:
    """Sum of the clocks in an encoded state vector: how many items a peer must have received."""
    return sum(decode_state_vector(state_vector).values())


def replay_through(server: Server, trace: dict, frames: list[bytes], clock: int, timeout: float) -> dict:
    doc = server.new_doc("b4")
    obs = LineProc([node_bin(), str(LOADGEN), "--url", server.ws_url, "--doc", doc, "--mode", "observe",
                    "--expect-clock", str(clock), "--print-text", "1", "--timeout", str(timeout)])
    out: dict = {"server": server.name}
    try:
        obs.read(60)  # observer synced
        cpu0 = server.cpu()
        t0 = time.perf_counter()

        async def go():
            from websockets.asyncio.client import connect

            async with connect(f"{server.ws_url}/{doc}", compression=None, max_size=None) as ws:
                async def discard():
                    async for _ in ws:
                        pass
                reader = asyncio.create_task(discard())
                for f in frames:
                    await ws.send(f)
                out["send_s"] = time.perf_counter() - t0
                # keep the connection open until the observer has everything
                result = await asyncio.to_thread(obs.read, timeout)
                out["wall_s"] = time.perf_counter() - t0
                reader.cancel()
                return result

        result = asyncio.run(go())
        out["cpu_s"] = server.cpu() - cpu0
        out["ok"] = result.get("text") == trace["endContent"]
    except (RuntimeError, TimeoutError, ValueError, OSError) as exc:
        out["error"] = str(exc)[:300]
    finally:
        obs.close()
    return out


# -- report --------------------------------------------------------------------------------------

def fmt(x: float, spec: str = ".1f") -> str:
    return "n/a" if x != x else format(x, spec)  # NaN -> n/a


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and a == a and b == b else "n/a"


def print_load_table(rows: list[tuple[list[LoadResult], LoadResult | None]]) -> None:
    print("\nFan-out load: N clients x M edits on one document (tests/js/loadgen.mjs, stock y-websocket clients)")
    d = Settings()
    print(f"  tinymorph: durable log on (SQLite, group commit, commit delay {d.commit_delay_ms:g} ms / group of "
          f"{d.commit_group_size}); node: @y/websocket-server 0.1.1, in memory")
    head = (f"{'scenario':<26}{'server':<11}{'deliveries':>11}{'deliv/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'CPU s':>8}{'CPU us/deliv':>14}{'converged':>11}{'workers CPU s':>15}")
    print(head)
    print("-" * len(head))
    for hubs, node in rows:
        for r in (*hubs, node):
            if r is None:
                continue
            if r.error:
                print(f"{r.scenario.label:<26}{r.server:<11}  FAILED: {r.error}")
                continue
            print(f"{r.scenario.label:<26}{r.server:<11}{r.deliveries:>11}{r.per_s:>10.0f}{fmt(r.p50_ms):>9}"
                  f"{fmt(r.p99_ms):>9}{r.cpu_s:>8.2f}{fmt(r.cpu_us_per_delivery):>14}{str(r.converged):>11}"
                  f"{r.workers_cpu_s if r.server != 'node' else float('nan'):>15.2f}")
        for hub in hubs:
            if node is None or hub.error or node.error:
                continue
            verdict = "meets" if hub.cpu_ratio(node) <= 1.0 else "misses"
            p99 = "meets" if hub.p99_ms <= node.p99_ms else "misses"
            label = "ratio t/n" if hub.server == "tinymorph" else f"{hub.server}/n"
            print(f"{'':<26}{label:<11}{'':>11}{ratio(hub.per_s, node.per_s):>10}{ratio(hub.p50_ms, node.p50_ms):>9}"
                  f"{ratio(hub.p99_ms, node.p99_ms):>9}{ratio(hub.cpu_s, node.cpu_s):>8}"
                  f"{ratio(hub.cpu_us_per_delivery, node.cpu_us_per_delivery):>14}  {verdict} CPU target <= 1.0x, "
                  f"{p99} p99 <= node's")
        print()


def print_median_ratios(rows: list[tuple[list[LoadResult], LoadResult | None]]) -> None:
    """Two lines per scenario and hub: the medians of its repetitions' CPU-per-delivery and
    keystroke p99 ratios to the Node server run beside it."""
    by_label: dict[tuple[str, str, str], list[float]] = {}
    for hubs, node in rows:
        for hub in hubs:
            if node is not None and not hub.error and not node.error and node.cpu_us_per_delivery:
                by_label.setdefault((hub.scenario.label, hub.server, "CPU us/deliv"), []).append(hub.cpu_ratio(node))
                if node.p99_ms:
                    by_label.setdefault((hub.scenario.label, hub.server, "p99"), []).append(hub.p99_ms / node.p99_ms)
    for (label, server, what), ratios in sorted(by_label.items()):
        verdict = "meets" if statistics.median(ratios) <= 1.0 else "misses"
        print(f"{label:<26}{server:<11}median {what} ratio to node over {len(ratios)} reps: "
              f"{statistics.median(ratios):.2f}x (each: {', '.join(f'{r:.2f}x' for r in ratios)})  "
              f"{verdict} target <= 1.0x")


def print_b4_table(raw_wall: float, raw_cpu: float, n_edits: int, runs: list[dict]) -> None:
    print(f"\nB4 (automerge-paper, {n_edits:,} edits, one update message each)")
    head = f"{'replay':<34}{'wall s':>9}{'edits/s':>11}{'server CPU s':>14}{'vs raw':>9}  result"
    print(head)
    print("-" * len(head))
    print(f"{'raw pycrdt (local, no network)':<34}{raw_wall:>9.2f}{n_edits / raw_wall:>11.0f}{'':>14}{'1.00x':>9}  "
          f"endContent ok (CPU {raw_cpu:.2f} s)")
    for r in runs:
        label = f"through {r['server']}" + (" (durable log)" if r["server"] == "tinymorph" else " (memory)")
        if "error" in r:
            print(f"{label:<34}  FAILED: {r['error']}")
            continue
        note = "endContent ok" if r["ok"] else "TEXT MISMATCH"
        if r["server"] == "tinymorph":
            note += ", " + ("meets" if r["wall_s"] <= 2 * raw_wall else "misses") + " target <= 2x raw"
        print(f"{label:<34}{r['wall_s']:>9.2f}{n_edits / r['wall_s']:>11.0f}{r['cpu_s']:>14.2f}"
              f"{r['wall_s'] / raw_wall:>8.2f}x  {note} (all sent after {r['send_s']:.2f} s)")


def print_validation_cost(trace: dict, n: int = 20000) -> None:
    """What the hub does to each update before pycrdt applies it, per update of the B4 trace:
    the structural scan (``limits.check_update``), the gap check (``limits.clocks_after``) and
    pycrdt's own decode (``get_state``), beside the cost of applying it."""
    import pycrdt

    from collab.limits import UpdateLimits, check_update, clocks_after
    from collab.protocol import decode_message

    trace = dict(trace, txns=trace["txns"][:n])
    updates = [decode_message(f).payload for f in replay_raw(trace | {"endContent": _prefix_content(trace["txns"])},
                                                             collect=True)[2]]
    limits, clocks = UpdateLimits(), {}

    def timed(step) -> float:
        t0 = time.perf_counter()
        for u in updates:
            step(u)
        return (time.perf_counter() - t0) / len(updates) * 1e6

    def gap(u: bytes) -> None:
        clocks.update(clocks_after(check_update(u, limits), lambda c: clocks.get(c, 0)))

    doc = pycrdt.Doc()
    rows = [("structure (check_update)", timed(lambda u: check_update(u, limits))),
            ("structure + gap check (clocks_after)", timed(gap)),
            ("pycrdt decode (get_state)", timed(pycrdt.get_state)),
            ("pycrdt apply (apply_update)", timed(doc.apply_update))]
    print(f"\nValidation per update, before pycrdt applies it (first {len(updates):,} updates of B4, one process)")
    apply_us = rows[-1][1]
    for label, us in rows:
        print(f"  {label:<40}{us:>8.1f} us  {us / apply_us:>6.2f}x apply")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hub", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller loads (a smoke run)")
    ap.add_argument("--no-node", action="store_true", help="skip the Node reference server")
    ap.add_argument("--no-b4", action="store_true", help="skip the B4 trace replay")
    ap.add_argument("--no-load", action="store_true", help="skip the fan-out load scenarios")
    ap.add_argument("--timeout", type=float, default=120, help="per scenario, seconds")
    ap.add_argument("--only", choices=["paced", "burst"], help="run only the paced or only the burst scenarios")
    ap.add_argument("--also-delay-ms", type=float, default=0,
                    help="also run the paced scenario against a hub with this commit delay "
                         "(TINYMORPH_COMMIT_DELAY_MS; default 0, a commit per update), to show the CPU/latency "
                         "trade; negative: skip")
    ap.add_argument("--reps", type=int, default=1,
                    help="repeat each scenario (all servers back to back each time, in the reverse order every "
                         "other time); the table shows every repetition and the median CPU ratio")
    ap.add_argument("--serve", action="store_true",
                    help="20 people typing 50 edits/s against the hub as `make serve` starts it (graph on) and with "
                         "the graph off, beside Node (no B4 replay unless asked with --b4)")
    ap.add_argument("--b4", action="store_true", help="with --serve: also replay B4")
    ap.add_argument("--graph-off-only", action="store_true",
                    help="with --serve: only the hubs with the graph off (quicker, for the CPU target)")
    ap.add_argument("--baseline", type=Path,
                    help="with --serve: also hubs run from this checkout (graph on and off), e.g. a worktree of main")
    args, _unknown = ap.parse_known_args(argv)  # tolerate flags meant for other benches (python -m bench)
    node_bin()

    q = args.quick
    scenarios = [
        # paced: a lively room, 8 people typing 10 edits/s each; the server mostly idles between
        Scenario("paced 8x100 @10/s", "paced", 8, 20 if q else 100, 10.0),
        # bursts: everything at once, enough edits that CPU readings (10 ms ticks) mean something
        Scenario("burst 8x2000", "burst", 8, 100 if q else 2000),
        Scenario("burst 32x150", "burst", 32, 10 if q else 150),
    ]
    if args.serve:
        scenarios = [Scenario("typing 20x150 @50/s", "paced", 20, 30 if q else 150, 50.0)]
        args.no_b4 = not args.b4
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tinymorph-bench-") as tmp:
        work = Path(tmp)
        servers: list[Server] = []
        try:
            if args.serve:
                graph = not args.graph_off_only
                hub = HubServer(work, name="tm nograph")
                servers += [HubServer(work, graph=True, name="tm serve"), hub] if graph else [hub]
                if args.baseline:
                    if graph:
                        servers.append(HubServer(work, graph=True, name="before", source=args.baseline))
                    servers.append(HubServer(work, name="before ng", source=args.baseline))
            else:
                hub = HubServer(work)
                servers.append(hub)
            chosen = [] if args.no_load else [sc for sc in scenarios if args.only in (None, sc.mode)]
            paced = any(sc.mode == "paced" for sc in chosen)
            alt = (HubServer(work, args.also_delay_ms) if args.also_delay_ms >= 0 and paced and not args.serve
                   else None)
            if alt:
                servers.append(alt)
            node = None if args.no_node else NodeServer(work)
            if node:
                servers.append(node)
            rows = []
            if chosen:
                # Unmeasured warm-up: V8 optimises the Node server's hot path only after thousands of
                # updates (its CPU per delivery falls by a third over the first few runs), so
                # without this the first rows would compare against a Node still warming up.
                warm = Scenario("warm-up", "burst", 8, 50 if q else 1000)
                for s in servers:
                    run_load(s, warm, args.timeout)
            for sc in chosen:
                for rep in range(max(1, args.reps)):
                    # All servers back to back per scenario, so drift in the machine's load hits them
                    # alike, in the reverse order every other repetition (in trials the order alone
                    # moved the CPU ratio by up to a quarter).
                    order = [s for s in servers if s is not alt or sc.mode == "paced"]
                    got = {s.name: run_load(s, sc, args.timeout) for s in (order if rep % 2 == 0 else order[::-1])}
                    rows.append(([got[s.name] for s in order if s is not node], got.get(node.name) if node else None))
            if rows:
                print_load_table(rows)
                if args.reps > 1:
                    print_median_ratios(rows)

            if not args.no_b4:
                trace = load_trace("automerge-paper.json.gz")
                if q:
                    trace = dict(trace, txns=trace["txns"][:20000])
                    trace["endContent"] = _prefix_content(trace["txns"])
                raw_wall, raw_cpu, _, _ = replay_raw(trace)
                _, _, frames, clock = replay_raw(trace, collect=True)
                runs = [replay_through(hub, trace, frames, clock, max(args.timeout, 240))]
                if node:
                    runs.append(replay_through(node, trace, frames, clock, max(args.timeout, 240)))
                print_b4_table(raw_wall, raw_cpu, len(trace["txns"]), runs)
            print_validation_cost(load_trace("automerge-paper.json.gz"), 2000 if q else 20000)
        finally:
            for s in servers:
                s.stop()
        print(f"\n(bench.hub took {time.monotonic() - started:.0f} s; logs were in {tmp})")
    return 0


def _prefix_content(txns: list[dict]) -> str:
    """endContent of a prefix of a sequential trace (for --quick)."""
    buf: list[str] = []
    for txn in txns:
        for pos, n_del, ins in txn["patches"]:
            buf[pos:pos + n_del] = list(ins)
    return "".join(buf)


if __name__ == "__main__":
    raise SystemExit(main())

"""Scale-out benchmark (issue 17): one document's peers over 1, 2, 3 hub processes on one
PostgreSQL and one Redis, and many documents joining at once.

    python -m bench scale [--processes 1,2,3] [--clients 8] [--edits 100] [--rate 10] [--docs 1000] [--quick]
                          [--only paced|burst|joins] [--generators 1,2] [--reps N] [--no-alone] [--no-node]

Rows, all in one run, side by side:
  - ``1 alone``: one hub on PostgreSQL without a cluster (what a lone hub does today),
  - ``N cluster``: N hub processes with ``cluster_url`` (Redis Streams between them),
  - ``node``: the Node reference server (@y/websocket-server, in memory) for the same load.
Fan-out (tests/js/scaleload.mjs: stock y-websocket clients in one node process, client i on
process i mod N): deliveries/s, p50/p99 latency for peers on the same process and on another
one, CPU per delivered update (all hub processes together, and the busiest one). Joins: ``--docs``
clients each on its own document (created on first join) connect, sync and type a word: joins/s
and sync p50/p99, the server's CPU and the load generators' (split over ``--generators`` node
processes, a row each: one generator process is itself the limit near a thousand joins a second).

On this 2-core machine the load generator, PostgreSQL, Redis and every hub process share two
cores: more processes cannot show more throughput here, only what the cluster costs per update
(CPU per delivery) and what it adds to latency across processes. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.hub import JS_DIR, LineProc, NodeServer, cpu_of, fmt, free_port, node_bin
from collab.testing import HUB_ONLY, HubProcess

SCALELOAD = JS_DIR / "scaleload.mjs"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass
class Row:
    label: str
    scenario: str
    processes: int
    deliveries: int = 0
    per_s: float = 0.0
    same: tuple[float | None, float | None] = (None, None)
    cross: tuple[float | None, float | None] = (None, None)
    cpu: list[float] = field(default_factory=list)
    converged: bool = False
    joins_per_s: float = 0.0
    sync: tuple[float | None, float | None] = (None, None)
    #: joins: CPU seconds of the load generators, and the run's wall time (are they the limit?)
    gen_cpu: float = 0.0
    seconds: float = 0.0
    error: str | None = None

    @property
    def cpu_us(self) -> float:
        return sum(self.cpu) / self.deliveries * 1e6 if self.deliveries else float("nan")


class Redis:
    """A private redis-server (no persistence) for the run."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                                      "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Database:
    """A fresh PostgreSQL database, dropped at the end."""

    def __init__(self) -> None:
        import sqlalchemy as sa

        self.name = f"tm_scale_{uuid.uuid4().hex[:8]}"
        self._admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = PG_ADMIN.rsplit("/", 1)[0] + f"/{self.name}"

    def drop(self) -> None:
        import sqlalchemy as sa

        with self._admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()


class Hubs:
    def __init__(self, workdir: Path, n: int, db: str, cluster: str | None) -> None:
        env = {**HUB_ONLY, "TINYMORPH_AUTO_CREATE_DOCS": "true", "TINYMORPH_EXTENSIONS": ""}
        if cluster:
            env["TINYMORPH_CLUSTER_URL"] = cluster
        self.hubs = [HubProcess(workdir / f"hub{i}", db=db, env=env) for i in range(n)]
        for hub in self.hubs:
            hub.start(timeout=60)

    @property
    def urls(self) -> str:
        return ",".join(h.ws_url for h in self.hubs)

    def cpu(self) -> list[float]:
        return [h.cpu_seconds() for h in self.hubs]

    def stop(self) -> None:
        for hub in self.hubs:
            hub.stop()


def run(urls: str, cpu, args: list[str], row: Row, timeout: float) -> Row:
    gen = LineProc([node_bin(), str(SCALELOAD), "--urls", urls, "--timeout", str(timeout), *args])
    try:
        gen.read(timeout)
        before = cpu()
        gen.say("go")
        out = gen.read(timeout + 30)
        row.cpu = [b - a for a, b in zip(before, cpu())]
        if "deliveries" in out:
            row.deliveries, row.converged = out["deliveries"], out["converged"]
            row.per_s = out["deliveries"] / out["seconds"] if out["seconds"] else float("nan")
            row.same, row.cross = (out["sameP50"], out["sameP99"]), (out["crossP50"], out["crossP99"])
    except (RuntimeError, TimeoutError, ValueError) as exc:
        row.error = str(exc)[:200]
    finally:
        gen.close()
    return row


def run_joins(urls: str, cpu, docs: int, generators: int, row: Row, timeout: float) -> Row:
    """The many-documents room with the clients split over ``generators`` node processes, all
    told "go" together: one node process drives about a thousand joins a second with a whole
    core, so with one generator a fast server measures the generator (its CPU beside the wall
    time says when)."""
    prefix = f"join-{uuid.uuid4().hex[:6]}"
    sizes = [docs // generators + (k < docs % generators) for k in range(generators)]
    gens = [LineProc([node_bin(), str(SCALELOAD), "--urls", urls, "--timeout", str(timeout), "--mode", "joins",
                      "--doc", f"{prefix}-g{k}", "--clients", str(n)]) for k, n in enumerate(sizes)]
    try:
        for gen in gens:
            gen.read(timeout)
        before, gen_before = cpu(), [cpu_of(g.proc.pid) for g in gens]
        for gen in gens:
            gen.say("go")
        outs = [gen.read(timeout + 30) for gen in gens]
        row.cpu = [b - a for a, b in zip(before, cpu())]
        row.gen_cpu = sum(cpu_of(g.proc.pid) - a for g, a in zip(gens, gen_before))
        lat = sorted(x for out in outs for x in out["lat"])
        row.seconds = max(out["seconds"] for out in outs)
        row.joins_per_s = docs / row.seconds
        # percentiles as loadcommon.mjs takes them, so pooled rows read like a single generator's
        row.sync = (lat[len(lat) // 2], lat[min(len(lat) - 1, len(lat) * 99 // 100)])
    except (RuntimeError, TimeoutError, ValueError, KeyError) as exc:
        row.error = str(exc)[:200]
    finally:
        for gen in gens:
            gen.close()
    return row


def measure(label: str, n: int, urls: str, cpu, opts, timeout: float) -> list[Row]:
    rows = []
    for scenario, extra in (("paced", ["--rate", str(opts.rate)]), ("burst", [])):
        if opts.only not in (None, scenario):
            continue
        doc = f"scale-{scenario}-{uuid.uuid4().hex[:6]}"
        rows.append(run(urls, cpu, ["--doc", doc, "--clients", str(opts.clients), "--edits", str(opts.edits),
                                    "--mode", scenario, *extra], Row(label, scenario, n), timeout))
    if opts.only in (None, "joins"):
        for g in opts.generators:
            rows.append(run_joins(urls, cpu, opts.docs, g, Row(label, f"{opts.docs} docs/{g}g", n), timeout))
    return rows


def ms(pair: tuple[float | None, float | None]) -> str:
    return "/".join(fmt(x) if x is not None else "-" for x in pair)


def print_table(rows: list[Row]) -> None:
    head = (f"{'config':<12}{'scenario':<11}{'deliveries':>11}{'deliv/s':>9}{'same p50/p99 ms':>18}"
            f"{'cross p50/p99 ms':>18}{'CPU us/deliv':>14}{'busiest':>9}{'joins/s':>9}{'sync p50/p99 ms':>18}  ok / joins: "
            "server CPU s, load generators' CPU s / wall s")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.error:
            print(f"{r.label:<12}{r.scenario:<11}  FAILED: {r.error}")
            continue
        busiest = max(r.cpu) / r.deliveries * 1e6 if r.deliveries and r.cpu else float("nan")
        if r.deliveries:
            print(f"{r.label:<12}{r.scenario:<11}{r.deliveries:>11}{r.per_s:>9.0f}{ms(r.same):>18}{ms(r.cross):>18}"
                  f"{fmt(r.cpu_us):>14}{fmt(busiest):>9}{'':>9}{'':>18}  {'converged' if r.converged else 'DIVERGED'}")
        else:
            print(f"{r.label:<12}{r.scenario:<11}{'':>11}{'':>9}{'':>18}{'':>18}{'':>14}{'':>9}"
                  f"{r.joins_per_s:>9.0f}{ms(r.sync):>18}  CPU {sum(r.cpu):.2f} s ({' + '.join(f'{c:.2f}' for c in r.cpu)}),"
                  f" generators {r.gen_cpu:.2f} / {r.seconds:.2f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", default="1,2,3", help="hub process counts, comma list")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0, help="paced: edits/s per client")
    ap.add_argument("--docs", type=int, default=1000, help="the many-documents room: clients, one document each")
    ap.add_argument("--generators", default="1,2",
                    help="joins: node load-generator processes the clients are split over, comma list (a row each)")
    ap.add_argument("--no-node", action="store_true")
    ap.add_argument("--no-alone", action="store_true", help="skip the lone hub (no cluster) row")
    ap.add_argument("--only", choices=["paced", "burst", "joins"], help="one scenario only")
    ap.add_argument("--reps", type=int, default=1, help="repeat every row (configs back to back each time)")
    ap.add_argument("--quick", action="store_true", help="small loads (a smoke run)")
    ap.add_argument("--timeout", type=float, default=180)
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.clients, opts.edits, opts.docs = 4, 20, 50
    counts = [int(x) for x in opts.processes.split(",") if x.strip()]
    opts.generators = [int(x) for x in opts.generators.split(",") if x.strip()]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tm-scale-") as tmp:
        work = Path(tmp)
        redis = Redis(work)
        try:
            configs = [] if opts.no_alone else [("1 alone", 1, None)]
            configs += [(f"{n} cluster", n, redis.url) for n in counts]
            node = None if opts.no_node else NodeServer(work)
            try:
                for _ in range(opts.reps):  # every config, then Node, in each rep: ratios per rep
                    for label, n, cluster in configs:
                        db = Database()
                        hubs = None
                        try:
                            hubs = Hubs(work / label.replace(" ", "-"), n, db.url, cluster)
                            rows += measure(label, n, hubs.urls, hubs.cpu, opts, opts.timeout)
                        finally:
                            if hubs is not None:
                                hubs.stop()
                            db.drop()
                    if node is not None:
                        rows += measure("node", 1, node.ws_url, lambda: [node.cpu()], opts, opts.timeout)
            finally:
                if node is not None:
                    node.stop()
        finally:
            redis.stop()
    print(f"\nScale-out: {opts.clients} stock clients x {opts.edits} edits on one document (paced {opts.rate:g}/s "
          f"each, and burst), client i on process i mod N; {opts.docs} clients on a document each (joins)")
    print("  hubs on PostgreSQL (durable log, group commit); 'N cluster': cluster_url on a private Redis; "
          "node: @y/websocket-server, in memory. CPU: all hub processes; busiest: the busiest one alone.")
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

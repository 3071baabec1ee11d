"""Fuzz a live hub: ``python -m bench fuzz [--cases=100000] [--seed=0]``.

Sends grammar-aware hostile Yjs updates and presence (``collab.fuzz``) to four documents at once,
as owner, editor, viewer and agent in turn, and every 2,000 cases checks that the hub is up, each
control text is intact and each document loads in a stock yjs client. Prints what it sent, how
far it got past the hub's checks, how the hub closed the sockets, and every failure it found.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from collab.fuzz import fuzz_hub
from collab.testing import HubProcess

JS_DIR = Path(__file__).resolve().parent.parent / "tests" / "js"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-every", type=int, default=2000)
    ap.add_argument("--lanes", type=int, default=4, help="documents attacked at once")
    args, _unknown = ap.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="tinymorph-fuzz-") as tmp:
        hub = HubProcess(Path(tmp) / "hub", env={"TINYMORPH_WORKER_EMBEDDED": "false",
                                                 "TINYMORPH_GRAPH_ENABLED": "false"}).start()
        started = time.monotonic()
        try:
            report, divergences = asyncio.run(fuzz_hub(hub, args.cases, JS_DIR, args.seed, args.check_every, args.lanes))
        finally:
            code = hub.stop()
        took = time.monotonic() - started
        log = hub.log()
        panics = log.count("PyO3 is resuming a panic")  # pyo3 prints these itself; the hub contained them
        crashed = log.count("Traceback") > panics
        quarantined = log.count("quarantined")
    print(f"\nFuzz: {report.cases:,} hostile messages in {took:.0f} s ({report.cases / took:.0f}/s), seed {args.seed}")
    print("sent:        " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.by_kind.items())))
    print(f"reached pycrdt: {report.reached:,} causal updates past every check")
    print("closed with: " + ", ".join(f"{k} x{v:,}" for k, v in sorted(report.close_codes.items(), key=str)))
    print(f"hub exit code {code}; tracebacks in its log: {'yes' if crashed else 'none'} "
          f"(besides {panics} pycrdt panics, contained); entries quarantined: {quarantined}")
    print(f"yjs and pycrdt read different texts (hostile structs integrated differently): {len(divergences)} checks")
    print(f"failures: {len(report.failures)}")
    for failure in report.failures[:20]:
        print("  " + failure)
    return 1 if report.failures or crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())

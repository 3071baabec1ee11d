"""Fuzz a live hub: ``python -m bench fuzz [--cases=100000] [--seed=0]``.

Sends grammar-aware hostile Yjs updates and presence (``collab.fuzz``) to one document as owner,
editor, viewer and agent, and every 2,000 cases checks that the hub is up, a control client's
text is intact and the document loads in a stock yjs client. Prints what it sent, how the hub
closed the sockets, and every failure it found.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from collab.client import HubClient
from collab.fuzz import attack, hub_checker
from collab.testing import HubProcess

JS_DIR = Path(__file__).resolve().parent.parent / "tests" / "js"
CONTROL = "The control paragraph must survive every case."


def fuzz_hub(hub: HubProcess, cases: int, seed: int, check_every: int):
    doc_id, owner = hub.create_doc("fuzzed")
    tokens = {"owner": owner, "editor": hub.token(doc_id, "editor", "Eve"),
              "viewer": hub.token(doc_id, "viewer", "Vic"), "agent": hub.token(doc_id, "agent", "Ada")}

    async def go():
        async with HubClient(hub.ws_url, doc_id, token=owner) as control:
            await control.synced()
            control.text.insert(0, CONTROL)
            await control.flush()
            check = hub_checker(hub.url, hub.ws_url, doc_id, CONTROL, JS_DIR)
            return await attack(hub.ws_url, doc_id, tokens, cases, seed, check_every, check)

    return asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-every", type=int, default=2000)
    args, _unknown = ap.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="tinymorph-fuzz-") as tmp:
        hub = HubProcess(Path(tmp) / "hub", env={"TINYMORPH_WORKER_EMBEDDED": "false",
                                                 "TINYMORPH_GRAPH_ENABLED": "false"}).start()
        started = time.monotonic()
        try:
            report = fuzz_hub(hub, args.cases, args.seed, args.check_every)
        finally:
            code = hub.stop()
        took = time.monotonic() - started
        crashed = "Traceback" in hub.log()
    print(f"\nFuzz: {report.cases:,} hostile messages in {took:.0f} s ({report.cases / took:.0f}/s), seed {args.seed}")
    print("sent:        " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.by_kind.items())))
    print("closed with: " + ", ".join(f"{k} x{v:,}" for k, v in sorted(report.close_codes.items(), key=str)))
    print(f"hub exit code {code}; tracebacks in its log: {'yes' if crashed else 'none'}")
    print(f"failures: {len(report.failures)}")
    for failure in report.failures[:20]:
        print("  " + failure)
    return 1 if report.failures or crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())

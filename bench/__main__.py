"""Run every benchmark (or the ones named): ``python -m bench [store] [hub] [history] [inference] [--flags]``.

Flags go to every benchmark named; run ``python -m bench.NAME --help`` for each one's own.
"""

import importlib
import sys

ALL = ("store", "hub", "history", "inference")

names = [a for a in sys.argv[1:] if not a.startswith("-")] or ALL
flags = [a for a in sys.argv[1:] if a.startswith("-")]
for name in names:
    if name not in ALL:
        sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(ALL)}")
    try:
        module = importlib.import_module(f"bench.{name}")
    except ImportError as exc:
        print(f"\n## {name}: skipped ({exc})")
        continue
    print(f"\n## {name}")
    sys.argv = [f"bench.{name}", *flags]
    module.main()

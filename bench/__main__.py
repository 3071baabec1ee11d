"""Run every benchmark (or the ones named): ``python -m bench [store] [hub] [history] [inference] [--flags]``;
``python -m bench fuzz [--cases=N]`` fuzzes a live hub, ``python -m bench scale --processes 1,2,3``
measures several hub processes on PostgreSQL and Redis (neither is part of the default set).

Flags go to every benchmark named; run ``python -m bench.NAME --help`` for each one's own.
"""

import importlib
import sys

ALL = ("store", "hub", "history", "inference")
KNOWN = (*ALL, "fuzz", "scale")

# A benchmark's name, or a flag and its value (``--processes 1,2,3`` as well as ``--processes=1,2,3``).
names = [a for a in sys.argv[1:] if a in KNOWN] or ALL
flags = [a for a in sys.argv[1:] if a not in KNOWN]
if flags and not flags[0].startswith("-"):
    sys.exit(f"unknown benchmark {flags[0]!r}; choose from {', '.join(KNOWN)}")
for name in names:
    if name not in KNOWN:
        sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(KNOWN)}")
    try:
        module = importlib.import_module(f"bench.{name}")
    except ImportError as exc:
        print(f"\n## {name}: skipped ({exc})")
        continue
    print(f"\n## {name}")
    sys.argv = [f"bench.{name}", *flags]
    module.main()

"""The ``tinymorph eval`` command group, shared by every extension with an evaluation: the
inference layer adds ``steering``, the agents add ``writing``; whichever registers first makes it."""

from __future__ import annotations

import argparse

__all__ = ["eval_subcommands"]


def eval_subcommands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subcommands of ``tinymorph eval`` (created on first use)."""
    ev = subparsers.choices.get("eval")
    if ev is None:
        ev = subparsers.add_parser("eval", help="evaluations")
        ev._tinymorph_eval = ev.add_subparsers(dest="eval_command", required=True)  # type: ignore[attr-defined]
    return ev._tinymorph_eval  # type: ignore[attr-defined]

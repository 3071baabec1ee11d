"""A config dataclass from its defaults and a JSON object of overrides in an environment variable
(what the test suite uses to make PSR training and strength calibration tiny in worker processes)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, TypeVar

from ..exceptions import InvalidSteering

T = TypeVar("T")


def from_env(cls: type[T], variable: str) -> T:
    """``cls()`` with the fields ``$variable`` names (JSON lists become tuples); an unknown field or
    bad JSON is an ``InvalidSteering`` naming the variable."""
    raw = os.environ.get(variable)
    if not raw:
        return cls()
    try:
        fields: Any = json.loads(raw)
    except ValueError as exc:
        raise InvalidSteering(f"{variable}: not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise InvalidSteering(f"{variable}: a JSON object of fields")
    unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise InvalidSteering(f"{variable}: unknown field(s) {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

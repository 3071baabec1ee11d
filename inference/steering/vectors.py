"""The CAA vector library: build steering vectors from contrastive pairs, store, import, export.

Contrastive activation addition (Rimsky et al.): run a positive and a negative example through
the model, take the residual stream at layer L, average over positions and subtract. Averaged
over pairs, what is left is the direction that separates the two styles. The first position is
skipped: its norm is tens of times larger than the rest (an attention sink) and would dominate.

Vectors live in the database the ``InferenceConfig`` names (``models.steering_vectors``, migrated
by the inference layer's own Alembic history), one row per name, model and layer. GGUF control
vectors (llama.cpp's ``--control-vector`` format, ``gguf.py``) import and export here.

PSR vectors (``psr.py``) live in the same table, kind ``psr``: the learnt direction as the vector,
its per-token gate in the provenance (``gates``), and ``psr:NAME`` steers with both.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import sqlalchemy as sa

from .._migrate import migrate
from .._modelfiles import DATA
from ..exceptions import InvalidSteering, UnknownVector
from ..models import steering_vectors
from .gguf import GGUFLayers, read_control_vector, write_control_vector
from .spec import Gate, ModelInfo
from .strengths import stored_guide

__all__ = ["StoredVector", "VectorLibrary", "build_caa", "shipped_vectors", "public_provenance",
           "psr_default_strength"]


def build_caa(residuals: Callable[[list[str], Sequence[int]], list[dict[int, np.ndarray]]],
              pairs: Sequence[tuple[str, str]], layers: Sequence[int],
              progress: bool = True, on_pair: Callable[[int, int], None] | None = None) -> dict[int, np.ndarray]:
    """Mean over pairs of (mean positive activation - mean negative activation) at each layer.
    ``on_pair(done, total)`` after each pair (a REST build reports its progress through it)."""
    total = {layer: 0.0 for layer in layers}
    for i, (pos, neg) in enumerate(pairs):
        a_pos, a_neg = residuals([pos, neg], layers)
        for layer in layers:
            total[layer] = total[layer] + a_pos[layer][1:].mean(0) - a_neg[layer][1:].mean(0)
        if on_pair is not None:
            on_pair(i + 1, len(pairs))
        if progress:
            print(f"\r[tinymorph] CAA pairs {i + 1}/{len(pairs)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return {layer: (v / len(pairs)).astype(np.float32) for layer, v in total.items()}


def shipped_vectors() -> dict[str, dict]:
    """The example-pair files in ``inference/data/caa``, by vector name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((DATA / "caa").glob("*.json"))}


def public_provenance(provenance: dict) -> dict:
    """Provenance as an API shows it: a PSR gate's weights (``gates``, d_model numbers) left out."""
    return {k: v for k, v in provenance.items() if k != "gates"}


def _applied(stored: "StoredVector") -> np.ndarray:
    """The vector a control-vector file adds: a CAA vector as built; a PSR vector at its default
    strength with its coefficient constant (the llama.cpp approximation)."""
    if stored.kind != "psr":
        return stored.vector
    relative = stored.provenance["relative_norm"][str(stored.layer)]
    return stored.vector * np.float32(psr_default_strength(stored.provenance) / relative)


def psr_default_strength(provenance: dict) -> float:
    """A PSR vector's default strength: its calibrated one where calibration stored one
    (``provenance["strength"]``), else the strength training arrived at."""
    calibrated = (provenance.get("strength") or {}).get("default_strength")
    return float(calibrated if calibrated is not None else provenance["strength_trained"])


@dataclass
class StoredVector:
    name: str
    model_key: str
    layer: int
    vector: np.ndarray
    norm: float
    kind: str
    provenance: dict
    created_at: datetime | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "model_key": self.model_key, "layer": self.layer,
                "d_model": int(self.vector.shape[0]), "norm": round(self.norm, 4), "kind": self.kind,
                "provenance": public_provenance(self.provenance),
                "created_at": self.created_at.isoformat() if self.created_at else None}


class VectorLibrary:
    """Named steering vectors per model, plus the DirectionProvider the resolver asks.

    ``residuals(model)`` returns the torch engine's activation function for that model; it is
    only called to build vectors (on first use of a shipped vector, or ``build``).
    """

    def __init__(self, database_url: str, residuals: Callable[[ModelInfo], Callable] | None = None,
                 saes: Any = None, control_vectors: Path | None = None) -> None:
        self.db = sa.create_engine(database_url)
        #: The only folder ``gguf:NAME`` sources may name files in (see ``gguf.confine``).
        self.control_vectors = control_vectors
        migrate(self.db)  # the inference tables' own Alembic history
        self._residuals = residuals
        self.saes = saes
        self._build_lock = threading.Lock()

    # -- storage --------------------------------------------------------------------------------
    def put(self, name: str, model_key: str, vectors: dict[int, np.ndarray], kind: str,
            provenance: dict) -> list[StoredVector]:
        if not name or len(name) > 128 or any(c in name for c in ":#/ "):
            raise InvalidSteering(f"bad vector name {name!r} (no ':', '#', '/', spaces; <= 128 chars)")
        rows = [{"name": name, "model_key": model_key, "layer": int(layer), "d_model": int(v.shape[0]),
                 "norm": float(np.linalg.norm(v)), "vector": np.asarray(v, "<f4").tobytes(), "kind": kind,
                 "provenance": provenance} for layer, v in vectors.items()]
        with self.db.begin() as conn:
            conn.execute(sa.delete(steering_vectors).where(
                steering_vectors.c.name == name, steering_vectors.c.model_key == model_key,
                steering_vectors.c.layer.in_([r["layer"] for r in rows])))
            conn.execute(sa.insert(steering_vectors), rows)
        return self.get(name, model_key)

    def get(self, name: str, model_key: str) -> list[StoredVector]:
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(steering_vectors).where(
                steering_vectors.c.name == name, steering_vectors.c.model_key == model_key)
                .order_by(steering_vectors.c.layer)).all()
        return [self._row(r) for r in rows]

    def list(self, model_key: str | None = None) -> list[StoredVector]:
        q = sa.select(steering_vectors).order_by(steering_vectors.c.name, steering_vectors.c.layer)
        if model_key:
            q = q.where(steering_vectors.c.model_key == model_key)
        with self.db.connect() as conn:
            return [self._row(r) for r in conn.execute(q).all()]

    def delete(self, name: str, model_key: str) -> int:
        with self.db.begin() as conn:
            return conn.execute(sa.delete(steering_vectors).where(
                steering_vectors.c.name == name, steering_vectors.c.model_key == model_key)).rowcount

    @staticmethod
    def _row(r: Any) -> StoredVector:
        return StoredVector(r.name, r.model_key, r.layer, np.frombuffer(r.vector, "<f4").copy(), r.norm,
                            r.kind, r.provenance, r.created_at)

    # -- building -------------------------------------------------------------------------------
    def build(self, name: str, model: ModelInfo, pairs: Sequence[tuple[str, str]],
              layers: Sequence[int], source: str = "",
              on_pair: Callable[[int, int], None] | None = None) -> list[StoredVector]:
        if self._residuals is None:
            raise UnknownVector("building vectors needs the torch engine")
        if not pairs or any(len(p) != 2 or not all(isinstance(x, str) and x for x in p) for p in pairs):
            raise InvalidSteering("pairs must be a non-empty list of [positive, negative] strings")
        for layer in layers:
            if not 0 <= layer < model.n_layers:
                raise InvalidSteering(f"layer {layer} out of range 0..{model.n_layers - 1}")
        vectors = build_caa(self._residuals(model), pairs, list(layers), on_pair=on_pair)
        prov = {"method": "caa", "pairs": len(pairs), "source": source, "layers": list(layers),
                "skip_first_token": True,
                "relative_norm": {str(k): round(float(np.linalg.norm(v)) / model.layer_norms[k], 4)
                                  for k, v in vectors.items()}}
        return self.put(name, model.key, vectors, "caa", prov)

    def put_psr(self, name: str, model: ModelInfo, psr: Any, source: str = "") -> list[StoredVector]:
        """Store a trained ``psr.PSRVector`` under ``name`` (``psr:NAME`` steers with it)."""
        prov = psr.provenance() | {"source": source, "relative_norm": {
            str(psr.layer): round(float(np.linalg.norm(psr.vector)) / model.layer_norms[psr.layer], 4)}}
        return self.put(name, model.key, {psr.layer: psr.vector}, "psr", prov)

    def set_provenance(self, name: str, model_key: str, **fields: Any) -> None:
        """Add to a stored vector's provenance (a calibration's result, say) without touching the vector."""
        for stored in self.get(name, model_key):
            with self.db.begin() as conn:
                conn.execute(sa.update(steering_vectors).where(
                    steering_vectors.c.name == name, steering_vectors.c.model_key == model_key,
                    steering_vectors.c.layer == stored.layer).values(provenance=stored.provenance | fields))

    def ensure_shipped(self, name: str, model: ModelInfo) -> list[StoredVector]:
        """Build a shipped vector from its example pairs, once per model."""
        spec = shipped_vectors().get(name)
        if spec is None:
            return []
        with self._build_lock:
            have = self.get(name, model.key)
            if have:
                return have
            print(f"[tinymorph] building shipped CAA vector {name!r} (first use)", file=sys.stderr)
            return self.build(name, model, [tuple(p) for p in spec["pairs"]], [spec["layer"]],
                              source=f"inference/data/caa/{name}.json")

    def import_gguf(self, path: Path, name: str, model_key: str,
                    convention: GGUFLayers = GGUFLayers.APPLIED) -> list[StoredVector]:
        vectors = read_control_vector(path, convention)
        return self.put(name, model_key, vectors, "gguf",
                        {"method": "gguf-import", "file": str(path), "convention": str(convention)})

    def export_gguf(self, name: str, model_key: str, path: Path,
                    convention: GGUFLayers = GGUFLayers.APPLIED, model_hint: str = "llama") -> Path:
        stored = self.get(name, model_key)
        if not stored:
            raise UnknownVector(f"no vector {name!r} for model {model_key}")
        write_control_vector(path, {s.layer: _applied(s) for s in stored}, model_hint, convention)
        return Path(path)

    # -- DirectionProvider ----------------------------------------------------------------------
    def caa_vectors(self, name: str, model: ModelInfo) -> dict[int, np.ndarray]:
        stored = self.get(name, model.key) or self.ensure_shipped(name, model)
        if stored and stored[0].kind == "psr":
            raise InvalidSteering(f"{name!r} is a PSR vector: steer with psr:{name}", param="source")
        if not stored:
            known = sorted({s.name for s in self.list(model.key)} | set(shipped_vectors()))
            raise UnknownVector(f"no steering vector {name!r} for this model (known: {', '.join(known)})",
                                param="source")
        return {s.layer: s.vector for s in stored}

    def caa_default_strength(self, name: str, model: ModelInfo) -> float:
        """Its calibration's default (``provenance["strength"]``), else the general CAA guide's."""
        stored = self.get(name, model.key)
        return stored_guide(f"caa:{name}", stored[0].provenance if stored else None).default

    def psr_vectors(self, name: str, model: ModelInfo) -> tuple[dict[int, tuple[np.ndarray, Gate]], float]:
        """{layer: (direction, per-token gate)} of a PSR vector, and its default strength."""
        stored = self.get(name, model.key)
        if not stored or stored[0].kind != "psr":
            known = sorted({s.name for s in self.list(model.key) if s.kind == "psr"})
            raise UnknownVector(f"no PSR vector {name!r} for this model (known: {', '.join(known) or 'none'}; "
                                "POST /api/vectors {name, instruction} trains one)", param="source")
        gates = stored[0].provenance["gates"]
        return ({s.layer: (s.vector, Gate(np.asarray(gates[str(s.layer)]["w"], np.float32), float(gates[str(s.layer)]["b"]),
                                          float(gates[str(s.layer)]["mean"]))) for s in stored},
                psr_default_strength(stored[0].provenance))

    def sae_direction(self, sae_id: str, feature: int, model: ModelInfo) -> tuple[int, np.ndarray]:
        if self.saes is None:
            raise UnknownVector("no SAE registry configured", param="source")
        return self.saes.sae_direction(sae_id, feature, model)

    def sae_default_strength(self, sae_id: str, feature: int, model: ModelInfo) -> float:
        if self.saes is None:
            raise UnknownVector("no SAE registry configured", param="source")
        return self.saes.sae_default_strength(sae_id, feature, model)

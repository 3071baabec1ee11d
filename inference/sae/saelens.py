"""SAE features as steering directions, from SAELens-format folders on disk.

A folder ``<data_dir>/saes/<SAE_ID>/`` holds ``cfg.json`` and ``sae_weights.safetensors`` as
SAELens saves them. Steering along feature f adds a multiple of its decoder row ``W_dec[f]``.
How much is sensible depends on how strongly the feature fires in ordinary text, so we measure
its typical max activation on reference prose and report the strength range derived from it.

We read the files ourselves (numpy + safetensors) rather than import sae-lens: steering needs
the decoder rows and the encoder, and sae-lens would pull in its whole training stack. Training,
evaluation and search of SAEs live next door (``train``, ``eval``, ``explain``).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .._modelfiles import reference_texts
from ..exceptions import InvalidSteering, UnknownFeature, UnknownSAE
from ..steering.spec import ModelInfo
from ..steering.strengths import StrengthGuide, sae_guide

__all__ = ["SAE", "SAERegistry", "FeatureInfo"]


def _layer_of(hook_name: str, hook_layer: int | None) -> int:
    """Our layer L is the output of block L. TransformerLens' ``hook_resid_pre`` of block L is the
    output of block L-1, so it shifts by one; ``hook_resid_post`` and HF ``model.layers.L`` do not."""
    m = re.search(r"(?:blocks|layers|h)\.(\d+)", hook_name or "")
    if m is None:
        if hook_layer is None:
            raise InvalidSteering(f"cannot tell the layer of SAE hook {hook_name!r}")
        layer = int(hook_layer)
    else:
        layer = int(m.group(1))
    return layer - 1 if hook_name.endswith("hook_resid_pre") else layer


@dataclass
class SAE:
    id: str
    layer: int
    architecture: str
    W_enc: np.ndarray  # (d_in, d_sae)
    W_dec: np.ndarray  # (d_sae, d_in)
    b_enc: np.ndarray
    b_dec: np.ndarray
    threshold: np.ndarray | None = None  # jumprelu
    k: int | None = None  # topk
    apply_b_dec_to_input: bool = True
    model_name: str = ""

    @property
    def d_in(self) -> int:
        return self.W_dec.shape[1]

    @property
    def d_sae(self) -> int:
        return self.W_dec.shape[0]

    @classmethod
    def load(cls, folder: Path, sae_id: str) -> "SAE":
        from safetensors.numpy import load_file

        cfg = json.loads((folder / "cfg.json").read_text())
        meta = cfg.get("metadata") or {}
        hook_name = cfg.get("hook_name") or meta.get("hook_name") or ""
        w = load_file(str(folder / "sae_weights.safetensors"))
        arch = cfg.get("architecture") or ("topk" if cfg.get("k") else "standard")
        threshold = w.get("threshold")
        if threshold is None and "log_threshold" in w:
            threshold = np.exp(w["log_threshold"])
        sae = cls(sae_id, _layer_of(hook_name, cfg.get("hook_layer")), arch,
                  w["W_enc"].astype(np.float32), w["W_dec"].astype(np.float32),
                  w.get("b_enc", np.zeros(w["W_dec"].shape[0])).astype(np.float32),
                  w.get("b_dec", np.zeros(w["W_dec"].shape[1])).astype(np.float32),
                  None if threshold is None else threshold.astype(np.float32), cfg.get("k"),
                  bool(cfg.get("apply_b_dec_to_input", True)),
                  cfg.get("model_name") or meta.get("model_name") or "")
        if sae.W_enc.shape != (sae.d_in, sae.d_sae):
            raise InvalidSteering(f"SAE {sae_id}: W_enc has shape {sae.W_enc.shape}, expected "
                                  f"{(sae.d_in, sae.d_sae)}")
        return sae

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Feature activations for residuals ``x`` (n, d_in)."""
        pre = (x - self.b_dec if self.apply_b_dec_to_input else x) @ self.W_enc + self.b_enc
        if self.architecture == "jumprelu" and self.threshold is not None:
            return pre * (pre > self.threshold)
        acts = np.maximum(pre, 0)
        if self.architecture == "topk" and self.k:
            kth = np.partition(acts, -self.k, axis=-1)[:, -self.k][:, None]
            acts = np.where(acts >= kth, acts, 0)
        return acts

    def direction(self, feature: int) -> np.ndarray:
        if not 0 <= feature < self.d_sae:
            raise UnknownFeature(f"SAE {self.id} has features 0..{self.d_sae - 1}, not {feature}",
                                 param="source")
        return self.W_dec[feature]


@dataclass(frozen=True)
class FeatureInfo:
    sae_id: str
    feature: int
    layer: int
    max_activation: float  # over the reference prose
    decoder_norm: float
    #: Strength (in residual norms, as in a steering spec) that adds the feature at its typical
    #: max activation; an uncalibrated feature's guide is built from it (``feature_guide``).
    typical_strength: float


#: (texts, layer) -> one (tokens, d_model) array per text; the torch engine's residuals.
Residuals = Callable[[list[str], int], list[np.ndarray]]


class SAERegistry:
    def __init__(self, root: Path, residuals: Callable[[ModelInfo], Residuals] | None = None) -> None:
        self.root = Path(root)
        self._residuals = residuals
        self._cache: dict[str, SAE] = {}
        self._lock = threading.Lock()

    def folder(self, sae_id: str) -> Path:
        if not sae_id or ".." in sae_id.split("/") or sae_id.startswith("/"):
            raise UnknownSAE(f"bad SAE id {sae_id!r}", param="source")
        return self.root / sae_id

    def ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(str(p.parent.relative_to(self.root)) for p in self.root.rglob("cfg.json")
                      if (p.parent / "sae_weights.safetensors").exists())

    def get(self, sae_id: str) -> SAE:
        with self._lock:
            if sae_id not in self._cache:
                folder = self.folder(sae_id)
                if not (folder / "cfg.json").exists() or not (folder / "sae_weights.safetensors").exists():
                    raise UnknownSAE(f"no SAE {sae_id!r} (looked for cfg.json and "
                                     f"sae_weights.safetensors in {folder})", param="source")
                self._cache[sae_id] = SAE.load(folder, sae_id)
            return self._cache[sae_id]

    def forget(self, sae_id: str) -> None:
        """Drop a loaded SAE, so the next ``get`` reads its folder again (after training)."""
        with self._lock:
            self._cache.pop(sae_id, None)

    def feature_guide(self, sae_id: str, feature: int, model: ModelInfo) -> StrengthGuide:
        """The feature's strength guide: measured by ``calibrate_feature`` when it has been (the
        fluency ladder, stored beside the SAE), else from its typical activation."""
        measured = self._measured(sae_id, model).get(str(feature))
        if measured is not None:
            return StrengthGuide.from_json(measured["guide"])
        return sae_guide(self.feature_info(sae_id, feature, model).typical_strength)

    def save_feature_guide(self, sae_id: str, feature: int, model: ModelInfo, guide: StrengthGuide,
                           points: list[dict]) -> None:
        self.get(sae_id).direction(feature)  # validates the index
        with self._lock:
            path = self._guides_path(sae_id, model)
            stored = json.loads(path.read_text()) if path.exists() else {}
            stored[str(feature)] = {"guide": guide.to_json(), "points": points}
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(stored, indent=1))
            tmp.replace(path)  # atomic: a reader never sees half a file

    def _guides_path(self, sae_id: str, model: ModelInfo) -> Path:
        return self.folder(sae_id) / f"feature_guides_{model.key}.json"

    def _measured(self, sae_id: str, model: ModelInfo) -> dict:
        path = self._guides_path(sae_id, model)
        return json.loads(path.read_text()) if path.exists() else {}

    def sae_default_strength(self, sae_id: str, feature: int, model: ModelInfo) -> float:
        return self.feature_guide(sae_id, feature, model).default

    def sae_direction(self, sae_id: str, feature: int, model: ModelInfo) -> tuple[int, np.ndarray]:
        sae = self.get(sae_id)
        if sae.d_in != model.d_model:
            raise InvalidSteering(f"SAE {sae_id} reads width {sae.d_in}; the model has {model.d_model}")
        return sae.layer, sae.direction(feature)

    def feature_info(self, sae_id: str, feature: int, model: ModelInfo) -> FeatureInfo:
        """Typical max activation of a feature; all features are measured at once and cached."""
        sae = self.get(sae_id)
        sae.direction(feature)  # validates the index
        stats = self.folder(sae_id) / f"feature_max_{model.key}.npy"
        if stats.exists():
            maxes = np.load(stats)
        else:
            if self._residuals is None:
                raise UnknownFeature(f"no activation statistics for SAE {sae_id} and no engine to "
                                     "compute them")
            acts = self._residuals(model)(reference_texts(), sae.layer)
            # Per text, skip the first token (huge norm), take each feature's max; then the median
            # over texts, so one odd passage does not set the scale.
            maxes = np.median(np.stack([sae.encode(a[1:]).max(axis=0) for a in acts]), axis=0)
            np.save(stats, maxes.astype(np.float32))
        dnorm = float(np.linalg.norm(sae.W_dec[feature]))
        m = float(maxes[feature])
        return FeatureInfo(sae_id, feature, sae.layer, m, dnorm, m * dnorm / model.layer_norms[sae.layer])

"""Decompose a CAA steering vector into SAE features, and follow a steer into later layers.

1. At the vector's own layer: the features whose decoder rows point along the vector (cosine),
   and the features the encoder reads from it (``relu(v @ W_enc)``, no biases: v is a difference
   of activations, so the offsets cancel).
2. Seed 002's plan: steer a prompt at layer k, run it unsteered and steered, encode the
   residuals at every later layer that has an SAE, and list the features whose mean activation
   changed most — what the steer turns on and off downstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..exceptions import SAEIncompatible
from ..steering.spec import SteeringSpec
from ._torch import TorchSAE

if TYPE_CHECKING:
    from ..registry import Inference

__all__ = ["decompose", "downstream"]


def decompose(inf: Inference, vector: str, sae_id: str, top: int = 10) -> dict:
    info = inf.torch_engine().info
    sae = inf.saes.get(sae_id)
    by_layer = inf.library.caa_vectors(vector, info)
    if sae.layer not in by_layer:
        raise SAEIncompatible(f"vector {vector!r} has layers {sorted(by_layer)}; SAE {sae_id} reads "
                              f"layer {sae.layer}", param="sae")
    v = by_layer[sae.layer].astype(np.float32)
    dec = sae.W_dec / np.linalg.norm(sae.W_dec, axis=1, keepdims=True)
    cos = dec @ (v / np.linalg.norm(v))
    enc = np.maximum(v @ sae.W_enc, 0)
    by_cos = np.argsort(-np.abs(cos))[:top]
    by_enc = np.argsort(-enc)[:top]
    # how much of v the top features span (least squares on their decoder rows)
    basis = dec[by_cos].T
    coef, *_ = np.linalg.lstsq(basis, v, rcond=None)
    explained = 1 - float(np.sum((v - basis @ coef) ** 2) / np.sum(v ** 2))
    return {"vector": vector, "sae_id": sae_id, "layer": sae.layer, "norm": float(np.linalg.norm(v)),
            "by_cosine": [{"feature": int(j), "cosine": round(float(cos[j]), 4)} for j in by_cos],
            "by_encoder": [{"feature": int(j), "activation": round(float(enc[j]), 4)} for j in by_enc
                           if enc[j] > 0],
            "variance_explained_by_top_cosine": round(explained, 4)}


def downstream(inf: Inference, vector: str, prompt: str, strength: float = 0.5,
               layer: int | None = None, top: int = 10) -> dict:
    """Mean feature activations per later-layer SAE, unsteered vs steered (seed 002's steps 2-5)."""
    engine = inf.torch_engine().load()
    info = engine.info
    spec = [{"source": f"caa:{vector}", "strength": strength}]
    if layer is not None:
        spec[0]["layers"] = [layer]
    steering = engine.resolve(SteeringSpec.from_json(spec))
    k = min(iv.layer for iv in steering.interventions)
    later = {}
    for sid in inf.saes.ids():
        s = inf.saes.get(sid)
        if s.layer >= k and s.d_in == info.d_model:
            later.setdefault(s.layer, []).append(sid)
    if not later:
        raise SAEIncompatible(f"no SAE at layer {k} or later to observe the steer with", param="sae")
    layers = sorted(later)
    plain = engine.residuals([prompt], layers)[0]
    steered = engine.residuals([prompt], layers, steering)[0]
    out = []
    for lay in layers:
        for sid in later[lay]:
            t = TorchSAE(inf.saes.get(sid))
            a = t.encode(torch.from_numpy(plain[lay][1:])).mean(0)
            b = t.encode(torch.from_numpy(steered[lay][1:])).mean(0)
            diff = (b - a).numpy()
            order = np.argsort(-np.abs(diff))[:top]
            out.append({"sae_id": sid, "layer": lay, "changes": [
                {"feature": int(j), "unsteered": round(float(a[j]), 4), "steered": round(float(b[j]), 4),
                 "delta": round(float(diff[j]), 4)} for j in order]})
    return {"vector": vector, "steer_layer": k, "strength": strength, "prompt": prompt, "saes": out}

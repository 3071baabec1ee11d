"""Shared state for the inference tests: one Inference (and so one loaded model per backend) per
test process, in a temporary data dir, so the torch conversion and CAA builds happen once."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from collab.config import Settings
from inference import Inference

CHAT = [{"role": "user", "content": "Tell me about your weekend."}]


@lru_cache(maxsize=1)
def data_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="tinymorph-inference-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@lru_cache(maxsize=1)
def inference() -> Inference:
    return Inference(Settings(data_dir=data_dir()))


#: Cross-backend parity tolerance, in logits. llama.cpp (8-bit activations x 4-bit weights) and the
#: float32 reference part ways at near-ties; scored by the reference (teacher forcing), llama.cpp's
#: greedy picks were at most 0.47 below the best token over 3 prompts x 5 steering specs, while a
#: steered output scored as unsteered falls 3-15 below it. Halfway, on a log scale, is about 1.
NEAR_TIE = 1.0


def reference_gaps(reference, request, token_ids: list[int]) -> list[float]:
    """For each token another backend chose: how far below the reference's best it scores."""
    logits = reference.score(request, token_ids)
    return [float(logits[t].max() - logits[t][tok]) for t, tok in enumerate(token_ids)]

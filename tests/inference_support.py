"""Shared state for the inference tests: one Inference (and so one loaded model per backend) per
test process, in a temporary data dir, so the torch conversion and CAA builds happen once."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from inference import Inference, InferenceConfig

CHAT = [{"role": "user", "content": "Tell me about your weekend."}]


@lru_cache(maxsize=1)
def data_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="tinymorph-inference-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@lru_cache(maxsize=1)
def inference() -> Inference:
    return Inference(InferenceConfig(data_dir=data_dir()))


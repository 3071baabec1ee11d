"""``gguf:`` steering sources name files in the control_vectors folder and nowhere else, on every
path a spec takes (runs and personas resolve in the engine; /v1 too), and errors name no path
outside the folder (no file-existence oracle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference import InvalidSteering, ModelInfo, SteeringSpec
from inference.steering import confine, resolve, write_control_vector

MODEL = ModelInfo(key="toy", n_layers=4, d_model=8, layer_norms=(1.0, 1.0, 1.0, 1.0))


class Library:
    def __init__(self, folder: Path) -> None:
        self.control_vectors = folder


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "control_vectors"
    folder.mkdir()
    write_control_vector(folder / "calm.gguf", {2: np.ones(8, np.float32)})
    (tmp_path / "secret.gguf").write_bytes((folder / "calm.gguf").read_bytes())
    return folder


@pytest.mark.parametrize("name", ["/etc/passwd", "../secret.gguf", "../../../../etc/hostname", "sub/../../secret.gguf",
                                  "missing.gguf", "."])
def test_paths_outside_the_folder_or_missing_are_refused_without_naming_them(folder, name):
    with pytest.raises(InvalidSteering) as err:
        confine(name, folder)
    message = str(err.value)
    assert "/etc" not in message and str(folder.parent) not in message


def test_outside_paths_answer_alike_whether_or_not_they_exist(folder):
    messages = []
    for name in ("../secret.gguf", "../nothing-here.gguf"):
        with pytest.raises(InvalidSteering) as err:
            confine(name, folder)
        messages.append(str(err.value).replace("secret", "X").replace("nothing-here", "X"))
    assert messages[0] == messages[1]


def test_a_file_in_the_folder_resolves(folder):
    assert confine("calm.gguf", folder) == (folder / "calm.gguf").resolve()
    spec = SteeringSpec.from_json([{"source": "gguf:calm.gguf", "layers": [2], "strength": 0.5}])
    resolved = resolve(spec, MODEL, Library(folder))
    assert resolved  # one intervention at layer 2


def test_a_run_or_persona_spec_goes_through_the_same_confinement(folder):
    """Runs and personas resolve in the engine with the vector library as provider."""
    spec = SteeringSpec.from_json([{"source": "gguf:/etc/passwd", "layers": [2], "strength": 0.5}])
    with pytest.raises(InvalidSteering) as err:
        resolve(spec, MODEL, Library(folder))
    assert "/etc" not in str(err.value)
    with pytest.raises(InvalidSteering, match="control_vectors folder"):
        resolve(spec, MODEL, None)  # no library: no folder, no file opened

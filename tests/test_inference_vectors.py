"""CAA vector library (build, store, GGUF import/export with the layer shift) and SAE features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa
from gguf import GGUFReader
from safetensors.numpy import save_file

from inference import (VERSION_TABLE, GenerationRequest, GGUFLayers, InferenceConfig, SamplingParams, SteeringSpec,
                       UnknownFeature, VectorLibrary, read_control_vector, write_control_vector)
from inference_support import CHAT, inference

pytestmark = pytest.mark.model  # not in `make test-fast`

PAIRS = [("I am delighted to inform you of the outcome.", "yo guess what lol"),
         ("Kindly find the report attached.", "here's the thing u wanted"),
         ("We appreciate your patience.", "thx for waiting!!")]


@pytest.fixture(scope="module")
def info():
    return inference().model_info()


def greedy(steering, n=10):
    return inference().engine().generate(GenerationRequest(
        messages=CHAT, params=SamplingParams(max_tokens=n), steering=SteeringSpec.from_json(steering))).token_ids


def test_build_stores_vector_with_provenance(info):
    lib = inference().library
    stored = lib.build("polite-test", info, PAIRS, [5, 10], source="test")
    assert [s.layer for s in stored] == [5, 10]
    s10 = stored[1]
    assert s10.vector.shape == (info.d_model,) and s10.norm == pytest.approx(np.linalg.norm(s10.vector), rel=1e-5)
    assert s10.provenance["pairs"] == 3 and s10.provenance["skip_first_token"] is True
    assert {"polite-test"} <= {v.name for v in lib.list(info.key)}
    # it is the difference of means, skipping the first token
    acts = inference().torch_engine().residuals([p for pair in PAIRS for p in pair], [10])
    expect = np.mean([acts[2 * i][10][1:].mean(0) - acts[2 * i + 1][10][1:].mean(0) for i in range(3)], 0)
    assert np.allclose(s10.vector, expect, atol=1e-4)
    # and steering by name uses it
    assert greedy([{"source": "caa:polite-test", "strength": 0.3, "layer": 10}]) != greedy(None)


def test_shipped_vectors_are_in_the_library(info):
    inference().library.caa_vectors("concise", info)
    names = {v.name for v in inference().library.list(info.key)}
    assert {"concise"} <= names


def test_gguf_export_import_round_trip_and_layer_shift(info, tmp_path):
    lib = inference().library
    formal = lib.caa_vectors("formal", info)  # shipped: layer 10
    applied, generator = tmp_path / "applied.gguf", tmp_path / "generator.gguf"
    lib.export_gguf("formal", info.key, applied, GGUFLayers.APPLIED)
    lib.export_gguf("formal", info.key, generator, GGUFLayers.GENERATOR)
    assert [t.name for t in GGUFReader(str(applied)).tensors] == ["direction.10"]
    # cvector-generator convention: block il's difference is saved as direction.{il+1}
    assert [t.name for t in GGUFReader(str(generator)).tensors] == ["direction.11"]
    assert str(GGUFReader(str(applied)).fields["general.architecture"].contents()) == "controlvector"
    back = read_control_vector(generator, GGUFLayers.GENERATOR)
    assert list(back) == [10] and np.allclose(back[10], formal[10])
    assert list(read_control_vector(generator, GGUFLayers.APPLIED)) == [11]
    imported = lib.import_gguf(generator, "formal-imported", info.key, GGUFLayers.GENERATOR)
    assert imported[0].layer == 10 and imported[0].provenance["convention"] == "generator"
    # a control-vector file (gguf: names one in the data dir's control_vectors folder) steers
    # exactly like the library vector it came from
    folder = inference().data_dir / "control_vectors"
    folder.mkdir(parents=True, exist_ok=True)
    lib.export_gguf("formal", info.key, folder / "formal-applied.gguf", GGUFLayers.APPLIED)
    same = greedy([{"source": "gguf:formal-applied.gguf", "strength": 0.3}])
    assert same == greedy([{"source": "caa:formal", "strength": 0.3}])
    assert same == greedy([{"source": "caa:formal-imported", "strength": 0.3}])


def test_the_library_migrates_its_own_tables_in_its_own_version_table(tmp_path):
    config = InferenceConfig(data_dir=tmp_path / "data")  # default: SQLite in the data dir
    assert config.database_url == f"sqlite:///{tmp_path / 'data' / 'tinymorph.db'}"
    VectorLibrary(config.database_url)
    VectorLibrary(config.database_url)  # idempotent
    db = sa.create_engine(config.database_url)
    with db.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    db.dispose()
    assert tables == {"inference_steering_vectors", "inference_saes", "alembic_version_inference"}
    assert version == ["0004"]


def test_config_from_env_follows_the_hub_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYMORPH_DATA_DIR", raising=False)
    monkeypatch.delenv("TINYMORPH_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert InferenceConfig.from_env().data_dir == tmp_path / "tinymorph"
    monkeypatch.setenv("TINYMORPH_DATA_DIR", str(tmp_path / "own"))
    monkeypatch.setenv("TINYMORPH_DB", "postgresql://x/y")
    config = InferenceConfig.from_env()
    assert config.data_dir == tmp_path / "own" and config.database_url == "postgresql://x/y"


def test_write_control_vector_refuses_layer_zero(tmp_path):
    with pytest.raises(Exception, match="layer 0"):
        write_control_vector(tmp_path / "x.gguf", {0: np.ones(4, np.float32)})


def _write_sae(folder, hook_name, w_dec, rng, architecture="standard"):
    d_sae, d_in = w_dec.shape
    folder.mkdir(parents=True)
    save_file({"W_enc": (rng.standard_normal((d_in, d_sae)) / np.sqrt(d_in)).astype(np.float32),
               "W_dec": w_dec.astype(np.float32), "b_enc": np.zeros(d_sae, np.float32),
               "b_dec": np.zeros(d_in, np.float32)}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({
        "architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32",
        "apply_b_dec_to_input": True, "metadata": {"hook_name": hook_name, "model_name": "smollm2"}}))


@pytest.fixture(scope="module")
def saes(info):
    """Two SAELens-format SAEs on disk whose feature 3 decodes to the 'formal' direction."""
    rng = np.random.default_rng(0)
    w_dec = rng.standard_normal((64, info.d_model)).astype(np.float32)
    w_dec[3] = 7.0 * inference().library.caa_vectors("formal", info)[10]  # any length: it is normalised
    saes = inference().saes
    _write_sae(saes.root / "test-res" / "post10", "blocks.10.hook_resid_post", w_dec, rng)
    _write_sae(saes.root / "test-res" / "pre11", "blocks.11.hook_resid_pre", w_dec, rng)
    return saes


def test_sae_feature_steers_along_its_decoder_row(saes):
    assert {"test-res/post10", "test-res/pre11"} <= set(saes.ids())
    assert saes.get("test-res/post10").layer == 10
    assert saes.get("test-res/pre11").layer == 10  # resid_pre of block 11 = output of block 10
    by_feature = greedy([{"source": "sae:test-res/post10#3", "strength": 0.3}])
    assert by_feature == greedy([{"source": "caa:formal", "strength": 0.3}])
    assert by_feature == greedy([{"source": "sae:test-res/pre11#3", "strength": 0.3}])
    with pytest.raises(UnknownFeature):
        greedy([{"source": "sae:test-res/post10#64", "strength": 0.3}])


def test_sae_feature_recommended_strength_comes_from_max_activation(saes, info):
    feat = inference().saes.feature_info("test-res/post10", 3, info)
    assert feat.layer == 10 and feat.max_activation > 0
    assert feat.typical_strength == pytest.approx(
        feat.max_activation * feat.decoder_norm / info.layer_norms[10], rel=1e-5)
    guide = inference().saes.feature_guide("test-res/post10", 3, info)  # not calibrated: from the activation
    t = round(feat.typical_strength, 3)
    assert (guide.default, guide.low, guide.high) == (t, t, round(2 * t, 3)) and t > 0
    assert guide.basis.startswith("not calibrated")
    # computed once, then read from the cache next to the weights
    assert (inference().saes.folder("test-res/post10") / f"feature_max_{info.key}.npy").exists()

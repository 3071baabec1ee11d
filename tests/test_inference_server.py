"""The OpenAI-compatible server, driven over real HTTP by the official ``openai`` client."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import openai
import pytest

from inference_support import CHAT, inference, serving

pytestmark = pytest.mark.model  # not in `make test-fast`

FORMAL = [{"source": "caa:formal", "strength": 0.3}]


@pytest.fixture(scope="module")
def base_url():
    # Warm up outside any HTTP timeout: the first use of a shipped vector converts the model for
    # torch and builds the vector (tens of seconds on a busy 2-core machine).
    inference().library.caa_vectors("formal", inference().model_info())
    with serving(inference()) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def test_models_lists_backends_and_embeddings(client):
    ids = {m.id for m in client.models.list()}
    base = inference().base_name
    assert {base, f"{base}@torch", "all-minilm-l6-v2"} <= ids


def test_chat_completion_plain_with_steering_and_timings(client):
    plain = client.chat.completions.create(model=inference().base_name, messages=CHAT, max_tokens=12,
                                           temperature=0)
    steered = client.chat.completions.create(model=inference().base_name, messages=CHAT, max_tokens=12,
                                             temperature=0, extra_body={"steering": FORMAL})
    assert plain.choices[0].message.content != steered.choices[0].message.content
    assert plain.usage.completion_tokens == 12 and plain.usage.prompt_tokens > 20
    timings = steered.model_extra["usage"]["timings"] if "usage" in steered.model_extra else \
        steered.usage.model_extra["timings"]
    assert timings["time_to_first_token_ms"] > 0


def test_chat_completion_streams_sse_with_usage(client):
    stream = client.chat.completions.create(model=inference().base_name, messages=CHAT, max_tokens=12,
                                            temperature=0, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    plain = client.chat.completions.create(model=inference().base_name, messages=CHAT, max_tokens=12,
                                           temperature=0)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 12


def test_completions_plain_and_stream(client):
    # min_tokens holds the end of text back, so exactly max_tokens come, whatever the model says
    kw = {"model": inference().base_name, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0,
          "extra_body": {"min_tokens": 4}}
    r = client.completions.create(**kw)
    assert r.choices[0].text.strip() and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4 and r.usage.prompt_tokens == 5
    chunks = list(client.completions.create(**kw, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_seed_makes_sampling_reproducible(client, chat):
    def sample(seed, stream=False):
        kw = {"model": inference().base_name, "max_tokens": 12, "temperature": 1.0, "seed": seed, "stream": stream}
        if chat:
            out = client.chat.completions.create(messages=CHAT, **kw)
            return "".join(c.choices[0].delta.content or "" for c in out) if stream else out.choices[0].message.content
        out = client.completions.create(prompt="Once upon a time", **kw)
        return "".join(c.choices[0].text for c in out) if stream else out.choices[0].text

    first = sample(11)
    assert first.strip()
    assert sample(11) == first and sample(11, stream=True) == first  # same seed, same draws
    others = {sample(seed) for seed in (12, 13, -11)}
    assert others - {first}, (first, others)  # other seeds draw other text (negative seeds too)


@pytest.mark.parametrize("seed", [True, 1.5, "7", 2**63, -(2**63) - 1], ids=repr)
def test_a_bad_seed_is_an_openai_error(base_url, seed):
    for path, body in (("/completions", {"prompt": "Hi"}), ("/chat/completions", {"messages": CHAT})):
        r = httpx.post(f"{base_url}{path}", json={"model": inference().base_name, "max_tokens": 2, "seed": seed,
                                                   **body}, timeout=60)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_request" and r.json()["error"]["param"] == "seed"


def test_torch_backend_over_http_is_the_torch_engine(client):
    """`@torch` routes to the reference backend (its parity with llama.cpp, judged token by token,
    is in test_inference_engines; greedy strings may part at a near-tie)."""
    from inference import GenerationRequest, SamplingParams

    kw = dict(messages=CHAT, max_tokens=8, temperature=0)
    a = client.chat.completions.create(model=inference().base_name, **kw)
    b = client.chat.completions.create(model=f"{inference().base_name}@torch", **kw)
    assert a.model == inference().base_name and b.model == f"{inference().base_name}@torch"
    local = inference().engine(f"{inference().base_name}@torch").generate(
        GenerationRequest(messages=CHAT, params=SamplingParams(max_tokens=8)))
    assert b.choices[0].message.content == local.text and local.text.strip()
    assert a.choices[0].message.content.strip()


def test_embeddings(client):
    r = client.embeddings.create(model="all-minilm-l6-v2",
                                 input=["A cat sat on the mat.", "A kitten rested on the rug.",
                                        "Quarterly revenue rose by five percent."])
    v = np.array([d.embedding for d in r.data])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # similar sentences are closer


def test_steer_compare_side_by_side(base_url):
    body = {"model": inference().base_name, "messages": CHAT, "max_tokens": 16, "temperature": 0.7,
            "steering": FORMAL}
    r = httpx.post(f"{base_url}/steer/compare", json=body, timeout=60).json()
    assert r["seed"] == 0 and r["steered"]["text"] != r["default"]["text"]
    again = httpx.post(f"{base_url}/steer/compare", json=body, timeout=60).json()
    assert again["steered"]["text"] == r["steered"]["text"]  # same seed, same output


@pytest.mark.parametrize("body,status,code", [
    ({"model": "no-such-model"}, 404, "model_not_found"),
    ({"steering": [{"source": "caa:nope", "strength": 0.3}]}, 404, "vector_not_found"),
    ({"steering": [{"source": "sae:nope#3", "strength": 0.3}]}, 404, "sae_not_found"),
    ({"steering": [{"source": "caa:formal", "strength": 0.3, "layer": 99}]}, 400, "layer_out_of_range"),
    ({"steering": [{"source": "caa:formal", "strength": 1e6}]}, 400, "invalid_steering"),
    ({"messages": [{"role": "user", "content": "word " * 3000}]}, 400, "context_length_exceeded"),
    ({"temperature": -1}, 400, "invalid_request"),
    ({"max_tokens": 4, "min_tokens": 9}, 400, "invalid_request"),
])
def test_bad_input_is_an_openai_error_and_the_server_keeps_serving(client, base_url, body, status, code):
    full = {"model": inference().base_name, "messages": CHAT, "max_tokens": 4, **body}
    r = httpx.post(f"{base_url}/chat/completions", json=full, timeout=60)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    ok = client.chat.completions.create(model=inference().base_name, messages=CHAT, max_tokens=2)
    assert ok.choices[0].message.content


def test_nan_strength_via_raw_json_and_openai_client_error(client, base_url):
    raw = ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], '
           '"steering": [{"source": "caa:formal", "strength": NaN}]}' % inference().base_name)
    r = httpx.post(f"{base_url}/chat/completions", content=raw, timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "finite" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-4", messages=CHAT)
    assert exc.value.body["code"] == "model_not_found"
    bad = httpx.post(f"{base_url}/completions", content=b"{not json", timeout=10)
    assert bad.status_code == 400 and json.loads(bad.text)["error"]["type"] == "invalid_request_error"


def test_gguf_sources_over_http_are_confined_to_the_control_vectors_dir(client, base_url, tmp_path):
    from inference import GGUFLayers

    info = inference().model_info()
    folder = inference().data_dir / "control_vectors"
    folder.mkdir(parents=True, exist_ok=True)
    inference().library.caa_vectors("formal", info)
    inference().library.export_gguf("formal", info.key, folder / "formal.gguf", GGUFLayers.APPLIED)
    kw = dict(model=inference().base_name, messages=CHAT, max_tokens=8, temperature=0)
    by_file = client.chat.completions.create(**kw, extra_body={"steering": [
        {"source": "gguf:formal.gguf", "strength": 0.3}]})
    by_name = client.chat.completions.create(**kw, extra_body={"steering": FORMAL})
    assert by_file.choices[0].message.content == by_name.choices[0].message.content
    r = httpx.post(f"{base_url}/chat/completions", timeout=30, json={**kw, "steering": [
        {"source": "gguf:../../../etc/passwd", "strength": 0.3}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_steering"


def test_abandoned_streams_free_their_context(client, base_url):
    body = {"model": inference().base_name, "messages": CHAT, "max_tokens": 200, "stream": True,
            "steering": FORMAL}
    for _ in range(inference().pool_size + 2):  # more than the pool: a leaked context would block
        with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            next(r.iter_lines())
    ok = client.chat.completions.create(model=inference().base_name, messages=CHAT, max_tokens=2,
                                        timeout=60)
    assert ok.choices[0].message.content
    engine = inference().engine()
    deadline = time.monotonic() + 30
    while any(s.busy for s in engine._slots):
        assert time.monotonic() < deadline, "a context stayed busy after its client left"
        time.sleep(0.1)

"""Token probabilities on ``/v1`` as the OpenAI API defines them, read by the official ``openai``
client over real HTTP; the request-body limit and 5xx bodies that keep their reasons to the log."""

from __future__ import annotations

import logging
import math

import httpx
import openai
import pytest

from inference import Inference, InferenceConfig
from inference_support import CHAT, data_dir, inference, serving

pytestmark = pytest.mark.model  # not in `make test-fast`

PROMPT = "The harbour was quiet that morning. Mara walked along the pier,"


@pytest.fixture(scope="module")
def base_url():
    with serving(inference()) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def _check_top(chosen: str, logprob: float, top: list, k: int, greedy: bool) -> None:
    assert logprob <= 0 and math.isfinite(logprob)
    assert len(top) == k
    values = [t.logprob for t in top]
    assert values == sorted(values, reverse=True)
    assert sum(math.exp(v) for v in values) <= 1 + 1e-6
    if greedy:  # the argmax was chosen: it heads the alternatives, with the same logprob
        assert top[0].token == chosen and top[0].logprob == pytest.approx(logprob, abs=1e-6)


@pytest.mark.parametrize("backend", ["", "@torch"])
def test_chat_logprobs_line_up_with_the_content(client, backend):
    r = client.chat.completions.create(model=inference().base_name + backend, messages=CHAT, max_tokens=8,
                                       temperature=0, logprobs=True, top_logprobs=3)
    choice = r.choices[0]
    content = choice.logprobs.content
    assert len(content) == r.usage.completion_tokens - (choice.finish_reason == "stop")
    assert "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
        _check_top(t.token, t.logprob, t.top_logprobs, 3, greedy=True)
    plain = client.chat.completions.create(model=inference().base_name + backend, messages=CHAT, max_tokens=8,
                                           temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == choice.message.content


def test_chat_logprobs_stream_and_sampled_tokens(client):
    kwargs = dict(model=inference().base_name, messages=CHAT, max_tokens=10, temperature=1.0, seed=3,
                  logprobs=True, top_logprobs=2)
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "".join(t.token for t in streamed) == text
    whole = client.chat.completions.create(**kwargs)  # same seed: same tokens, same logprobs
    assert [(t.token, t.logprob) for t in whole.choices[0].logprobs.content] == [(t.token, t.logprob) for t in streamed]
    for t in streamed:  # sampled, not greedy: the chosen token need not head the list
        _check_top(t.token, t.logprob, t.top_logprobs, 2, greedy=False)


def test_completion_logprobs_with_echo_score_the_prompt(client):
    r = client.completions.create(model=inference().base_name, prompt=PROMPT, max_tokens=6, temperature=0,
                                  logprobs=2, echo=True)
    choice = r.choices[0]
    lp = choice.logprobs
    assert choice.text.startswith(PROMPT) and len(choice.text) > len(PROMPT)
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts the first token
    n_generated = r.usage.completion_tokens - (choice.finish_reason == "stop")
    assert len(lp.tokens) - n_generated in (r.usage.prompt_tokens, r.usage.prompt_tokens - 1)  # (less a BOS)
    for token, value, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert value <= 0 and token in top and top[token] == pytest.approx(value)
        assert 1 <= len(top) <= 3  # the two likeliest, and the chosen one when it is not among them
    for token, value, top in zip(lp.tokens[-n_generated:], lp.token_logprobs[-n_generated:], lp.top_logprobs[-n_generated:]):
        assert max(top.values()) == pytest.approx(value)  # greedy: the chosen token is the likeliest

    # scoring the whole text (max_tokens 0) gives the generated tokens the logprobs they were sampled with
    scored = client.completions.create(model=inference().base_name, prompt=choice.text, max_tokens=0, logprobs=0,
                                       echo=True).choices[0]
    assert scored.text == choice.text and scored.logprobs.tokens == lp.tokens
    for a, b in zip(scored.logprobs.token_logprobs[-n_generated:], lp.token_logprobs[-n_generated:]):
        assert a == pytest.approx(b, abs=0.5)  # llama.cpp: batch vs one-token kernels differ slightly
    no_lp = client.completions.create(model=inference().base_name, prompt=PROMPT, max_tokens=3, temperature=0, echo=True)
    assert no_lp.choices[0].logprobs is None and no_lp.choices[0].text.startswith(PROMPT)


@pytest.mark.parametrize("path, body, param", [
    ("/chat/completions", {"messages": CHAT, "logprobs": 1}, "logprobs"),  # a boolean, not an integer
    ("/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": True}, "top_logprobs"),
    ("/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ("/chat/completions", {"messages": CHAT, "top_logprobs": 2}, "top_logprobs"),  # needs logprobs: true
    ("/chat/completions", {"messages": CHAT, "echo": True}, "echo"),
    ("/completions", {"prompt": "Hi", "logprobs": True}, "logprobs"),
    ("/completions", {"prompt": "Hi", "logprobs": 6}, "logprobs"),
    ("/completions", {"prompt": "Hi", "logprobs": 2.0}, "logprobs"),
    ("/completions", {"prompt": "Hi", "echo": "yes"}, "echo"),
    ("/completions", {"prompt": "Hi", "max_tokens": True}, "max_tokens"),
    ("/completions", {"prompt": "Hi", "min_p": 2}, "min_p"),
    ("/completions", {"prompt": "Hi", "dry_allowed_length": False}, "dry_allowed_length"),
])
def test_bad_logprob_and_sampling_options_are_clear_400s(base_url, path, body, param):
    r = httpx.post(base_url + path, json={"model": inference().base_name, "max_tokens": 2, **body}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"]


def test_body_limit_is_a_413_before_reading_on(tmp_path):
    inf = Inference(InferenceConfig(data_dir=data_dir(), max_body_bytes=2000))
    with serving(inf) as url:
        big = {"model": inf.base_name, "prompt": "x" * 5000}
        r = httpx.post(url + "/completions", json=big, timeout=30)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        chunked = httpx.post(url + "/embeddings", content=iter([b'{"input": "', b"y" * 3000, b'"}']), timeout=30)
        assert chunked.status_code == 413  # no Content-Length: counted as it streams
        small = httpx.post(url + "/embeddings", json={"input": "a short text"}, timeout=60)
        assert small.status_code == 200 and len(small.json()["data"][0]["embedding"]) == 384
    with pytest.raises(ValueError):
        InferenceConfig(data_dir=tmp_path, max_body_bytes=True)


def test_server_errors_keep_their_reasons_in_the_log(tmp_path, caplog):
    missing = tmp_path / "secret-folder" / "missing.gguf"
    inf = Inference(InferenceConfig(data_dir=tmp_path / "data"), gguf=missing)
    with serving(inf) as url, caplog.at_level(logging.ERROR, logger="tinymorph.inference.server"):
        r = httpx.post(url + "/completions", json={"model": inf.base_name, "prompt": "Hi", "max_tokens": 2},
                       timeout=30)
    assert r.status_code >= 500
    err = r.json()["error"]
    assert "secret-folder" not in r.text and "Error" not in err["message"]
    request_id = r.headers["x-request-id"]
    assert request_id in err["message"]
    logged = "\n".join(rec.getMessage() + (str(rec.exc_info[1]) if rec.exc_info else "") for rec in caplog.records)
    assert request_id in logged and "secret-folder" in logged

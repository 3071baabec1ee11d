"""The one engine API shared by every backend: a request in, a stream of text pieces out.

A backend only has to turn prompt token ids into sampled token ids (``_run``); everything that
must behave identically across backends lives here: the chat template, validation against the
context size, steering resolution, sampling (``_sampling``), incremental UTF-8 decoding, stop
strings, usage and timings. That is what makes "same spec, same behaviour on every backend"
testable.
"""

from __future__ import annotations

import codecs
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..exceptions import ContextOverflow, InvalidRequest
from ..steering.spec import ModelInfo, ResolvedSteering, SteeringSpec, resolve
from . import _chat

__all__ = [
    "Backend", "FinishReason", "SamplingParams", "GenerationRequest", "Usage", "StreamEvent",
    "Completion", "Engine", "RunStats", "rng_for",
]


class Backend(StrEnum):
    LLAMA_CPP = "llama.cpp"
    TORCH = "torch"
    VLLM = "vllm"


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    #: End-of-sequence is masked until this many tokens are out (vLLM's ``min_tokens``): a raw
    #: completion of prose often ends after a few words, which is no use to a co-writer.
    min_tokens: int = 0
    #: 0 means greedy (argmax), identical on every backend.
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    #: Same seed, same draws (``rng_for``); None: fresh entropy. OpenAI's range, a signed 64-bit integer.
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.max_tokens, int) and 1 <= self.max_tokens <= 32768, "max_tokens",
             "must be an integer in 1..32768"),
            (isinstance(self.min_tokens, int) and 0 <= self.min_tokens <= self.max_tokens, "min_tokens",
             "must be an integer in 0..max_tokens"),
            (_finite(self.temperature) and 0 <= self.temperature <= 5, "temperature", "must be in 0..5"),
            (_finite(self.top_p) and 0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "must be >= 0"),
            (_finite(self.presence_penalty) and -2 <= self.presence_penalty <= 2, "presence_penalty",
             "must be in -2..2"),
            (_finite(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2,
             "frequency_penalty", "must be in -2..2"),
            (self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool)
                                   and -(2**63) <= self.seed < 2**63), "seed",
             "must be an integer in -2**63..2**63-1"),
            (len(self.stop) <= 4 and all(isinstance(s, str) and s for s in self.stop), "stop",
             "must be up to 4 non-empty strings"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise InvalidRequest(f"{name} {why}", param=name)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str | None = None
    messages: Sequence[dict] | None = None
    params: SamplingParams = SamplingParams()
    steering: SteeringSpec = SteeringSpec()

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequest("give exactly one of 'prompt' and 'messages'")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Prompt tokens whose KV cache was reused from the previous request on the same context.
    cached_tokens: int = 0
    time_to_first_token_ms: float = 0.0
    total_ms: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens_per_second(self) -> float:
        """Decode speed: tokens after the first over the time after the first."""
        decode_s = (self.total_ms - self.time_to_first_token_ms) / 1000
        return (self.completion_tokens - 1) / decode_s if self.completion_tokens > 1 and decode_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "timings": {"time_to_first_token_ms": round(self.time_to_first_token_ms, 2),
                        "total_ms": round(self.total_ms, 2),
                        "tokens_per_second": round(self.tokens_per_second, 2)},
        }


@dataclass
class StreamEvent:
    """A piece of generated text; the last event carries ``finish_reason`` and ``usage``."""
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    usage: Usage


@dataclass
class RunStats:
    """Filled in by a backend while it runs."""
    cached_tokens: int = 0


class Engine(ABC):
    """A loaded model that streams steered generations. Thread-safe; load happens lazily."""

    backend: Backend
    #: First layer this backend can steer.
    min_steer_layer: int = 0

    def __init__(self, name: str, model_path: Path, provider: Any = None) -> None:
        self.name = name
        self.model_path = Path(model_path)
        self.provider = provider  # DirectionProvider (vector library + SAEs) or None
        self._load_lock = threading.Lock()
        self._loaded = False

    # -- what a backend implements --------------------------------------------------------------
    @abstractmethod
    def _load(self) -> None: ...

    @property
    @abstractmethod
    def info(self) -> ModelInfo: ...

    @property
    @abstractmethod
    def n_ctx(self) -> int: ...

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of a full prompt (with BOS when the model wants one; special tokens parsed)."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes: ...

    @abstractmethod
    def eos_ids(self) -> set[int]: ...

    @abstractmethod
    def chat_template(self) -> tuple[str, str, str]:
        """(jinja template, bos token, eos token) from the model file."""

    @abstractmethod
    def _run(self, prompt_ids: list[int], params: SamplingParams, steering: ResolvedSteering,
             stats: RunStats) -> Iterator[int]:
        """Yield sampled token ids until the caller stops iterating (it always closes the generator)."""

    def check_steering(self, steering: ResolvedSteering) -> None:
        """Raise UnsupportedSteering for what this backend cannot do."""

    # -- shared ---------------------------------------------------------------------------------
    def load(self) -> "Engine":
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    def resolve(self, spec: SteeringSpec) -> ResolvedSteering:
        if not spec:
            return ResolvedSteering()  # unsteered requests never need norms or the library
        self.load()
        steering = resolve(spec, self.info, self.provider, self.min_steer_layer)
        self.check_steering(steering)
        return steering

    def render_prompt(self, request: GenerationRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        template, bos, eos = self.chat_template()
        return _chat.render(template, request.messages, bos_token=bos, eos_token=eos)

    def prepare(self, request: GenerationRequest) -> tuple[list[int], SamplingParams, ResolvedSteering]:
        """Validate everything before the first token, so errors surface before a stream starts."""
        self.load()
        steering = self.resolve(request.steering)
        ids = self.tokenize(self.render_prompt(request))
        if len(ids) >= self.n_ctx:
            raise ContextOverflow(
                f"the prompt is {len(ids)} tokens; this model's context holds {self.n_ctx}",
                param="messages" if request.messages is not None else "prompt")
        params = request.params
        room = self.n_ctx - len(ids)
        if params.max_tokens > room:
            params = SamplingParams(**{**params.__dict__, "max_tokens": room,
                                       "min_tokens": min(params.min_tokens, room)})
        return ids, params, steering

    def stream(self, request: GenerationRequest, prepared: tuple | None = None) -> Iterator[StreamEvent]:
        t0 = time.perf_counter()
        ids, params, steering = prepared or self.prepare(request)
        stats = RunStats()
        usage = Usage(prompt_tokens=len(ids))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        eos = self.eos_ids()
        hold = max((len(s) for s in params.stop), default=1) - 1
        pending, pending_ids = "", []
        finish = FinishReason.LENGTH
        gen = self._run(ids, params, steering, stats)
        try:
            for tok in gen:
                if usage.completion_tokens == 0:
                    usage.time_to_first_token_ms = (time.perf_counter() - t0) * 1000
                usage.completion_tokens += 1
                if tok in eos:
                    finish = FinishReason.STOP
                    break
                pending += decoder.decode(self.token_bytes(tok))
                pending_ids.append(tok)
                cut = min((i for i in (pending.find(s) for s in params.stop) if i >= 0), default=-1)
                if cut >= 0:
                    pending, finish = pending[:cut], FinishReason.STOP
                    break
                if usage.completion_tokens >= params.max_tokens:
                    break
                if len(pending) > hold:
                    emit = len(pending) - hold
                    yield StreamEvent(pending[:emit], pending_ids)
                    pending, pending_ids = pending[emit:], []
        finally:
            gen.close()
        if finish is FinishReason.LENGTH:
            pending += decoder.decode(b"", final=True)
        usage.cached_tokens = stats.cached_tokens
        usage.total_ms = (time.perf_counter() - t0) * 1000
        yield StreamEvent(pending, pending_ids, finish, usage)

    def generate(self, request: GenerationRequest) -> Completion:
        text, ids, last = [], [], None
        for ev in self.stream(request):
            text.append(ev.text)
            ids.extend(ev.token_ids)
            last = ev
        return Completion("".join(text), ids, last.finish_reason, last.usage)


def rng_for(params: SamplingParams) -> np.random.Generator:
    """One generator per request: same seed, same draws, on every backend. numpy seeds are
    non-negative: a negative seed maps to its two's complement (one to one over the int64 range)."""
    return np.random.default_rng(None if params.seed is None else params.seed % 2**64)

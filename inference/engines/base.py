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
from ._logprobs import TokenLogprob, logprobs_of

__all__ = [
    "Backend", "FinishReason", "SamplingParams", "GenerationRequest", "Usage", "StreamEvent",
    "Completion", "Engine", "RunStats", "rng_for", "TokenLogprob", "MAX_TOP_LOGPROBS",
]

#: The most alternatives per token ``logprobs`` may ask for (OpenAI's chat limit is 20).
MAX_TOP_LOGPROBS = 20


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
    #: Drop tokens below this share of the most likely one's probability (after top-p).
    min_p: float = 0.0
    #: llama.cpp's/CTRL's: logits of tokens in the last ``penalty_last_n`` (prompt included)
    #: divided by this when positive, multiplied when negative. 1 is off.
    repetition_penalty: float = 1.0
    #: DRY ("don't repeat yourself"): 0 is off; see ``_sampling.dry_penalties``.
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    #: How many recent tokens (prompt, then generated) the repetition penalty and DRY look at.
    penalty_last_n: int = 64
    #: None: no log-probabilities; k >= 0: each generated token's, with the k likeliest alternatives.
    logprobs: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (_int(self.max_tokens) and 1 <= self.max_tokens <= 32768, "max_tokens",
             "must be an integer in 1..32768"),
            (_int(self.min_tokens) and 0 <= self.min_tokens <= self.max_tokens, "min_tokens",
             "must be an integer in 0..max_tokens"),
            (_finite(self.temperature) and 0 <= self.temperature <= 5, "temperature", "must be in 0..5"),
            (_finite(self.top_p) and 0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (_int(self.top_k) and self.top_k >= 0, "top_k", "must be an integer >= 0"),
            (_finite(self.presence_penalty) and -2 <= self.presence_penalty <= 2, "presence_penalty",
             "must be in -2..2"),
            (_finite(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2,
             "frequency_penalty", "must be in -2..2"),
            (self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool)
                                   and -(2**63) <= self.seed < 2**63), "seed",
             "must be an integer in -2**63..2**63-1"),
            (len(self.stop) <= 4 and all(isinstance(s, str) and s for s in self.stop), "stop",
             "must be up to 4 non-empty strings"),
            (_finite(self.min_p) and 0 <= self.min_p <= 1, "min_p", "must be in 0..1"),
            (_finite(self.repetition_penalty) and 0 < self.repetition_penalty <= 10, "repetition_penalty",
             "must be in (0, 10]"),
            (_finite(self.dry_multiplier) and 0 <= self.dry_multiplier <= 10, "dry_multiplier", "must be in 0..10"),
            (_finite(self.dry_base) and 1 <= self.dry_base <= 4, "dry_base", "must be in 1..4"),
            (_int(self.dry_allowed_length) and 1 <= self.dry_allowed_length <= 64, "dry_allowed_length",
             "must be an integer in 1..64"),
            (_int(self.penalty_last_n) and 0 <= self.penalty_last_n <= 4096, "penalty_last_n",
             "must be an integer in 0..4096"),
            (self.logprobs is None or (_int(self.logprobs) and 0 <= self.logprobs <= MAX_TOP_LOGPROBS), "logprobs",
             f"must be an integer in 0..{MAX_TOP_LOGPROBS}"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise InvalidRequest(f"{name} {why}", param=name)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


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
    """A piece of generated text; the last event carries ``finish_reason``, ``usage`` and
    ``steering_notes``. ``logprobs`` (when asked for) line up with ``token_ids``."""
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    #: What this backend did differently from the spec (``Engine.steering_notes``).
    steering_notes: list[str] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    usage: Usage
    logprobs: list[TokenLogprob] = field(default_factory=list)
    steering_notes: list[str] = field(default_factory=list)


@dataclass
class RunStats:
    """Filled in by a backend while it runs."""
    cached_tokens: int = 0
    #: One per sampled token when ``params.logprobs`` is set (``_sampling.sample`` appends).
    logprobs: list[TokenLogprob] = field(default_factory=list)
    #: A backend that scores the prompt while it runs (vLLM's ``prompt_logprobs``): its own form.
    prompt_logprobs: list[Any] = field(default_factory=list)


class Engine(ABC):
    """A loaded model that streams steered generations. Thread-safe; load happens lazily."""

    backend: Backend
    #: First layer this backend can steer.
    min_steer_layer: int = 0
    #: True where steering is one constant vector per layer (llama.cpp): a PSR coefficient per
    #: token becomes its mean there, and the answer says so (``steering_notes``).
    constant_steering: bool = False

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

    def steering_notes(self, steering: ResolvedSteering) -> list[str]:
        """What this backend does differently from the spec, said in every answer it steers."""
        return [f"{self.backend}: {note}" for note in steering.approximations()] if self.constant_steering else []

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
        pending, pending_ids, pending_lp = "", [], []
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
                if params.logprobs is not None and stats.logprobs:
                    pending_lp.append(stats.logprobs[usage.completion_tokens - 1])
                cut = min((i for i in (pending.find(s) for s in params.stop) if i >= 0), default=-1)
                if cut >= 0:
                    pending, finish = pending[:cut], FinishReason.STOP
                    break
                if usage.completion_tokens >= params.max_tokens:
                    break
                if len(pending) > hold:
                    emit = len(pending) - hold
                    yield StreamEvent(pending[:emit], pending_ids, logprobs=pending_lp)
                    pending, pending_ids, pending_lp = pending[emit:], [], []
        finally:
            gen.close()
        if finish is FinishReason.LENGTH:
            pending += decoder.decode(b"", final=True)
        usage.cached_tokens = stats.cached_tokens
        usage.total_ms = (time.perf_counter() - t0) * 1000
        yield StreamEvent(pending, pending_ids, finish, usage, pending_lp, self.steering_notes(steering))

    def generate(self, request: GenerationRequest, prepared: tuple | None = None) -> Completion:
        text, ids, lps, last = [], [], [], None
        for ev in self.stream(request, prepared):
            text.append(ev.text)
            ids.extend(ev.token_ids)
            lps.extend(ev.logprobs)
            last = ev
        return Completion("".join(text), ids, last.finish_reason, last.usage, lps, last.steering_notes)

    def prompt_logprobs(self, request: GenerationRequest, top: int = 0) -> tuple[list[int], list[TokenLogprob | None]]:
        """The prompt's token ids and each token's log-probability given the ones before it
        (None for the first, which nothing predicts), steered as the request says: what
        ``echo`` with ``logprobs`` answers, and how a text's fluency (NLL) is measured."""
        ids, _params, steering = self.prepare(request)
        out: list[TokenLogprob | None] = [None]
        for i, row in enumerate(self._prompt_logits(ids, steering)):
            if i + 1 < len(ids):
                out.append(logprobs_of(row, ids[i + 1], top))
        return ids, out

    def _prompt_logits(self, ids: list[int], steering: ResolvedSteering) -> Iterator[np.ndarray]:
        """The logits after each of ``ids`` in turn (one row at a time: a whole prompt's would
        be ``len(ids) * vocab`` floats)."""
        raise InvalidRequest(f"the {self.backend} backend does not score prompts", param="echo")


def rng_for(params: SamplingParams) -> np.random.Generator:
    """One generator per request: same seed, same draws, on every backend. numpy seeds are
    non-negative: a negative seed maps to its two's complement (one to one over the int64 range)."""
    return np.random.default_rng(None if params.seed is None else params.seed % 2**64)

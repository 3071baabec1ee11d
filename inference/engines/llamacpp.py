"""llama.cpp backend (default, CPU): control-vector steering and a pool of contexts.

A control vector is one constant per layer: a PSR term (a coefficient per token) is applied at
its mean coefficient, the constant-coefficient approximation, and every answer says so
(``Engine.steering_notes``).

A llama.cpp control vector belongs to a whole context, so steered and unsteered requests cannot
share one. We keep a small pool of contexts, each remembering the steering its KV cache was
computed with (its fingerprint) and the tokens in it. A request takes a free context with the
same fingerprint and the longest common token prefix, and only evaluates the rest of its prompt:
a co-writer resends mostly the same document, so the warm prefix is most of it.

What llama-cpp-python lacks and we add: that pool, prefix reuse across steering configs, the
``generation``-only scope (prompt evaluated with one control vector, generation with another) and
the shared numpy sampler (``_sampling``) so greedy and seeded output match the torch backend.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .._modelfiles import load_norms, model_key
from ..exceptions import BackendUnavailable, InvalidRequest, UnsupportedSteering
from ..steering.spec import Method, ModelInfo, ResolvedSteering, Scope
from ._sampling import sample
from .base import Backend, Engine, RunStats, SamplingParams, rng_for

__all__ = ["LlamaCppEngine"]

#: Tokens per batch when every position's logits are read (llama.cpp keeps vocab floats for each).
_SCORE_BATCH = 64


@dataclass
class _Slot:
    llm: "object"  # llama_cpp.Llama
    fingerprint: str = ""  # steering the cached prompt tokens were computed with
    tokens: list[int] = field(default_factory=list)  # tokens whose KV is valid under it
    cvec: str | None = None  # fingerprint of the control vector loaded now (None: none set)
    busy: bool = False
    last_used: float = 0.0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _batches(tokens: list[int], size: int) -> list[list[int]]:
    """``tokens`` in batches of at most ``size``, none of them a lone token (unless there is only
    one): llama.cpp evaluates a batch of one on another kernel path (see ``_run``)."""
    out = [tokens[i:i + size] for i in range(0, len(tokens), size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2], out[-1] = out[-2][:-1], out[-2][-1:] + out[-1]
    return out


class LlamaCppEngine(Engine):
    backend = Backend.LLAMA_CPP
    min_steer_layer = 1  # the control-vector buffer has no slot for layer 0
    constant_steering = True  # a PSR term's coefficient per token becomes its mean (the answer says so)

    def __init__(self, name: str, model_path: Path, provider=None, *, data_dir: Path | None = None,
                 n_ctx: int = 2048, n_threads: int | None = None, pool_size: int = 4) -> None:
        super().__init__(name, model_path, provider)
        self.data_dir = data_dir
        self._n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.pool_size = pool_size
        self._slots: list[_Slot] = []
        self._pool = threading.Condition()
        self._info: ModelInfo | None = None

    # -- loading --------------------------------------------------------------------------------
    def _new_llama(self):
        import llama_cpp

        return llama_cpp.Llama(str(self.model_path), n_ctx=self._n_ctx, n_threads=self.n_threads,
                               n_threads_batch=self.n_threads, n_batch=512, verbose=False)

    def _load(self) -> None:
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - install script puts it there
            raise BackendUnavailable(f"llama-cpp-python is not installed: {exc}") from exc
        if not self.model_path.exists():
            raise BackendUnavailable(f"model file {self.model_path} does not exist")
        first = self._new_llama()
        if not all(hasattr(first, a) for a in ("_ctx", "_batch", "input_ids", "n_tokens")) \
                or not hasattr(first._batch, "set_batch"):  # pragma: no cover - guards the pin
            raise BackendUnavailable("this llama-cpp-python lacks the internals tinymorph uses for "
                                     "prompt scoring; install the pinned version (0.3.36)")
        self._slots.append(_Slot(first))
        self.n_layers = llama_cpp.llama_model_n_layer(first.model)
        self.n_embd = first.n_embd()
        self.n_vocab = first.n_vocab()
        vocab = llama_cpp.llama_model_get_vocab(first.model)
        self._eos = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        self._tok = first  # tokenizer: any context's Llama will do, tokenization is model-only
        self._piece: dict[int, bytes] = {}

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def info(self) -> ModelInfo:
        self.load()
        if self._info is None:
            key = model_key(self.model_path)
            norms = load_norms(key, self.data_dir) if self.data_dir else load_norms(key, Path("/nonexistent"))
            if norms is None:
                # Typical norms need residual activations, which only the torch engine exposes.
                from .torch_engine import TorchEngine

                norms = TorchEngine(self.name, self.model_path, data_dir=self.data_dir).typical_norms()
            self._info = ModelInfo(key, self.n_layers, self.n_embd, tuple(norms))
        return self._info

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        self.load()
        return self._tok.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._piece.get(token_id)
        if piece is None:
            piece = self._piece[token_id] = self._tok.detokenize([token_id], special=False)
        return piece

    def eos_ids(self) -> set[int]:
        self.load()
        return self._eos

    def chat_template(self) -> tuple[str, str, str]:
        self.load()
        meta = self._tok.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise InvalidRequest(f"model {self.name} has no chat template; use /v1/completions",
                                 param="messages")
        bos = self._tok.detokenize([self._tok.token_bos()], special=True).decode("utf-8", "replace")
        eos = self._tok.detokenize([self._tok.token_eos()], special=True).decode("utf-8", "replace")
        return template, bos, eos

    # -- steering -------------------------------------------------------------------------------
    def check_steering(self, steering: ResolvedSteering) -> None:
        if any(iv.method is Method.ORTHOGONAL for iv in steering.interventions):
            raise UnsupportedSteering(
                "method 'orthogonal' depends on each activation, which a llama.cpp control vector "
                "cannot express; use method 'add' or the torch/vllm backend", param="method")

    def _set_cvec(self, slot: _Slot, fingerprint: str, cv: np.ndarray | None) -> None:
        import llama_cpp

        if cv is not None and not np.any(cv):  # strength 0: nothing to add (and no layer range)
            cv = None
        if slot.cvec == (fingerprint if cv is not None else None):
            return
        if cv is None:
            rc = llama_cpp.llama_set_adapter_cvec(slot.llm.ctx, None, 0, self.n_embd, -1, -1)
        else:
            used = np.flatnonzero(np.any(cv != 0, axis=1))
            data = np.ascontiguousarray(cv[1:], dtype=np.float32).reshape(-1)  # buffer starts at layer 1
            rc = llama_cpp.llama_set_adapter_cvec(
                slot.llm.ctx, data.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), data.size,
                self.n_embd, int(used.min()), int(used.max()))
        if rc != 0:
            raise UnsupportedSteering(f"llama.cpp refused the control vector (code {rc})")
        slot.cvec = fingerprint if cv is not None else None

    # -- the pool -------------------------------------------------------------------------------
    def _acquire(self, fingerprint: str, ids: list[int]) -> _Slot:
        with self._pool:
            while True:
                free = [s for s in self._slots if not s.busy]
                same = [s for s in free if s.fingerprint == fingerprint]
                if same:
                    slot = max(same, key=lambda s: (_common_prefix(s.tokens, ids), s.last_used))
                elif len(self._slots) < self.pool_size:
                    slot = _Slot(self._new_llama())
                    self._slots.append(slot)
                elif free:
                    slot = min(free, key=lambda s: s.last_used)
                    slot.tokens, slot.fingerprint = [], fingerprint
                else:
                    self._pool.wait()
                    continue
                slot.busy = True
                return slot

    def _release(self, slot: _Slot) -> None:
        with self._pool:
            slot.busy, slot.last_used = False, time.monotonic()
            self._pool.notify()

    # -- generation -----------------------------------------------------------------------------
    def _run(self, ids: list[int], params: SamplingParams, steering: ResolvedSteering,
             stats: RunStats) -> Iterator[int]:
        import llama_cpp

        fp_prompt = steering.fingerprint(Scope.ALL)
        fp_gen = steering.fingerprint(Scope.ALL, Scope.GENERATION)
        slot = self._acquire(fp_prompt, ids)
        try:
            llm = slot.llm
            self._set_cvec(slot, fp_prompt, steering.control_vector(self.n_layers, self.n_embd, Scope.ALL))
            # Reuse the KV cache of the common prefix with an earlier prompt and evaluate the rest,
            # at least the last two prompt tokens, in batches of two or more. llama.cpp computes a
            # lone token on another kernel path (its logits up to ~0.5 apart from the same token's
            # in a batch); this way a prompt served from the cache gives bit-identical logits to
            # the same prompt evaluated cold, so a seed (or greedy decoding) gives the same text
            # whatever the context held before. For the same reason generated tokens, whose KV
            # comes from one-token evaluations, are never reused.
            reuse = max(0, min(_common_prefix(slot.tokens, ids), len(ids) - 2)) if slot.fingerprint == fp_prompt else 0
            stats.cached_tokens = reuse
            slot.fingerprint, slot.tokens = fp_prompt, ids[:reuse]
            llm.n_tokens = reuse  # Llama.eval drops the KV cache from n_tokens on
            for batch in _batches(ids[reuse:], llm.n_batch):
                llm.eval(batch)
            slot.tokens = list(ids)
            if fp_gen != fp_prompt:
                self._set_cvec(slot, fp_gen, steering.control_vector(
                    self.n_layers, self.n_embd, Scope.ALL, Scope.GENERATION))
            rng, generated = rng_for(params), []
            while True:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                               shape=(self.n_vocab,))
                tok = sample(logits, params, rng, generated, self.eos_ids(), ids, stats.logprobs)
                generated.append(tok)
                yield tok
                llm.eval([tok])
        finally:
            self._release(slot)

    def _prompt_logits(self, ids: list[int], steering: ResolvedSteering) -> Iterator[np.ndarray]:
        """Every position's logits: ``Llama.eval`` keeps only the last row (or, with
        ``logits_all``, a ``n_ctx * vocab`` buffer per context), so this asks llama.cpp for all
        outputs of each batch itself, through llama-cpp-python's batch and context wrappers
        (private in 0.3.36, which pyproject pins; checked in ``_load``). Small batches keep
        llama.cpp's output buffer small; the cache is not reused, every row is needed."""
        import llama_cpp

        fp = steering.fingerprint(Scope.ALL)
        slot = self._acquire(fp, ids)
        try:
            llm = slot.llm
            self._set_cvec(slot, fp, steering.control_vector(self.n_layers, self.n_embd, Scope.ALL))
            slot.fingerprint, slot.tokens = fp, []
            llm.n_tokens = 0
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            for batch in _batches(ids, _SCORE_BATCH):
                n_past = llm.n_tokens
                llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
                llm._ctx.decode(llm._batch)
                llm.input_ids[n_past:n_past + len(batch)] = batch
                llm.n_tokens += len(batch)
                for j in range(len(batch)):
                    yield np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, j),
                                                shape=(self.n_vocab,)).copy()
            slot.tokens = list(ids)
        finally:
            self._release(slot)

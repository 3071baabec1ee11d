"""The torch plumbing every SAE module shares: token windows, a layer's activations (stopping the
forward pass right after that layer), hooks that rewrite a layer's output, and an SAE as tensors.

Layer L is the output of ``model.model.layers[L]`` — the same place steering acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from .saelens import SAE

__all__ = ["TorchSAE", "forward_logits", "layer_activations", "rewrite_layer", "windows"]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer we want has run."""


class TorchSAE:
    """Encode/decode with an SAE's weights as torch tensors (the numpy ``SAE`` is for steering)."""

    def __init__(self, sae: SAE) -> None:
        self.sae = sae
        self.W_enc = torch.from_numpy(sae.W_enc)
        self.W_dec = torch.from_numpy(sae.W_dec)
        self.b_enc = torch.from_numpy(sae.b_enc)
        self.b_dec = torch.from_numpy(sae.b_dec)
        self.k = sae.k if sae.architecture == "topk" else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = (x - self.b_dec if self.sae.apply_b_dec_to_input else x) @ self.W_enc + self.b_enc
        if self.k:
            vals, idx = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        return pre.relu()

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec


def windows(tokenizer, texts: Sequence[str], ctx: int = 128) -> list[list[int]]:
    """Each text's tokens cut into windows of at most ``ctx`` (shorter than 4 tokens: dropped)."""
    out = []
    for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        out += [ids[i:i + ctx] for i in range(0, len(ids), ctx) if len(ids[i:i + ctx]) >= 4]
    return out


def _batch(wins: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(w) for w in wins)
    ids = torch.full((len(wins), n), pad, dtype=torch.long)
    mask = torch.zeros((len(wins), n), dtype=torch.long)
    for i, w in enumerate(wins):
        ids[i, :len(w)] = torch.tensor(w)
        mask[i, :len(w)] = 1
    return ids, mask  # right padding: with causal attention it never touches the real tokens


@torch.inference_mode()
def layer_activations(model, wins: Sequence[list[int]], layer: int, batch: int = 8,
                      pad: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """(window index, (len, d_model) activations at ``layer``) for each window, in order."""
    got: list[torch.Tensor] = []

    def hook(module, args, output):
        got.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = model.model.layers[layer].register_forward_hook(hook)
    try:
        for start in range(0, len(wins), batch):
            chunk = wins[start:start + batch]
            ids, mask = _batch(chunk, pad)
            got.clear()
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except _Stop:
                pass
            h = got[0].float()
            for j, w in enumerate(chunk):
                yield start + j, h[j, :len(w)]
    finally:
        handle.remove()


@contextmanager
def rewrite_layer(model, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Replace the output h of ``layer`` by ``fn(h)`` (h: (batch, seq, d)) while inside."""

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        new = fn(h)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = model.model.layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def forward_logits(model, ids: Sequence[int]) -> torch.Tensor:
    """Logits (seq, vocab) of one token sequence."""
    return model(input_ids=torch.tensor([list(ids)]), use_cache=False).logits[0].float()


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()

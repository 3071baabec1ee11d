"""Token-level helpers the transformers-tokenized engines (torch, vLLM) share."""

from __future__ import annotations

__all__ = ["bytes_decoder", "eos_candidates"]

#: End-of-generation tokens by name: llama.cpp treats all of these as EOG, so the others do too.
eos_candidates: tuple[str, ...] = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>")


def bytes_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, inverted: token characters back to raw bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}

"""The text SAEs are trained, indexed and evaluated on: the workspace's documents plus a corpus the
model writes itself. Nothing is downloaded.

Why both: the writer's own documents are what features should describe ("representation based on
the user's text"), but a fresh workspace holds a few paragraphs at most; prose the model writes
from varied writing prompts fills the gap with text in the model's own distribution, across the
genres and tones a writer may want to steer towards. The self-written corpus is cached as JSON
lines under the data dir and only ever extended.

The workspace's documents come from whoever composes the app, as a ``DocumentSource`` (the hub
reads its own tables; the inference layer does not know them). An SAE's corpus is frozen into its
folder (``corpus.jsonl``) so a resumed run, the feature index and the evaluation see the same text.

The held-out set for evaluation is ``data/reference.txt`` (never trained on).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._modelfiles import model_key, reference_texts
from ..config import DocumentSource
from ..engines.base import GenerationRequest, SamplingParams
from ..exceptions import EmptyCorpus

if TYPE_CHECKING:
    from ..registry import Inference

__all__ = ["WRITING_PROMPTS", "Corpus", "build_corpus", "heldout_texts", "load_corpus", "paragraphs",
           "save_corpus", "self_written"]

#: Varied on purpose: genres, registers, moods, points of view.
WRITING_PROMPTS: tuple[str, ...] = (
    "Write a short story about a lighthouse keeper who finds a letter in a bottle.",
    "Write a formal business email declining a partnership offer.",
    "Describe a busy market in the morning, using all five senses.",
    "Write a persuasive paragraph arguing that cities should plant more trees.",
    "Explain how a bicycle works to a ten-year-old.",
    "Write a melancholy poem about autumn leaves.",
    "Write a cheerful birthday message to an old friend.",
    "Write the opening of a mystery novel set on a night train.",
    "Summarize the causes of the French Revolution in plain language.",
    "Write an angry customer review of a hotel with a broken heater.",
    "Write a recipe for vegetable soup with step-by-step instructions.",
    "Describe the ocean during a storm.",
    "Write a dialogue between two astronauts repairing their ship.",
    "Write a motivational speech for a losing football team at half time.",
    "Write a diary entry of a child on the first day of school.",
    "Explain the difference between weather and climate.",
    "Write a humorous paragraph about a cat that thinks it is a dog.",
    "Write a cover letter for a job as a librarian.",
    "Describe a quiet forest at dawn.",
    "Write a scientific abstract about the effect of sleep on memory.",
    "Write a fairy tale about a dragon who is afraid of fire.",
    "Write a travel blog post about a rainy weekend in a small coastal town.",
    "Write a short biography of an imaginary painter.",
    "Write instructions for assembling a bookshelf.",
    "Write a sad farewell letter from a soldier to his family.",
    "Write a news report about a new bridge opening in a city.",
    "Describe your favourite food and why you love it.",
    "Write a philosophical reflection on time and memory.",
    "Write a product description for a handmade wooden chair.",
    "Write a tense scene in which a detective interrogates a suspect.",
    "Write a thank-you note to a teacher.",
    "Explain how to plant tomatoes in a garden.",
    "Write a romantic scene set in Paris in the rain.",
    "Write a complaint to the city council about noisy construction at night.",
    "Describe a futuristic city in the year 2300.",
    "Write a children's story about a brave little mouse.",
    "Write an essay introduction about the importance of reading.",
    "Write a horror story opening set in an abandoned hospital.",
    "Write a friendly text message inviting friends to a picnic.",
    "Explain the rules of chess briefly.",
)


@dataclass
class Corpus:
    """Training texts, with where each came from (for provenance and the feature cards)."""
    texts: list[str]
    sources: list[str]  # "doc:<id>" | "self:<prompt index>.<sample>"

    def provenance(self) -> dict:
        docs = sorted({s for s in self.sources if s.startswith("doc:")})
        return {"texts": len(self.texts), "documents": len(docs),
                "self_written": sum(s.startswith("self:") for s in self.sources),
                "chars": sum(len(t) for t in self.texts)}


def paragraphs(text: str, max_chars: int = 2000) -> list[str]:
    """Split a document into paragraphs, long ones into pieces: windows stay short either way."""
    out = []
    for p in (p.strip() for p in text.split("\n\n")):
        while len(p) > max_chars:
            cut = p.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(p[:cut])
            p = p[cut:].strip()
        if p:
            out.append(p)
    return out


def self_written(inf: Inference, n_samples: int = 2, max_tokens: int = 200,
                 prompts: tuple[str, ...] = WRITING_PROMPTS, progress: bool = True) -> list[tuple[str, str]]:
    """The model's answers to the writing prompts (``n_samples`` each, sampled at T=0.9), cached.

    Generated with the llama.cpp engine (the fastest on CPU). The cache is keyed by model, prompt,
    sample and length, so asking for more samples or prompts only generates the new ones.
    """
    from tqdm.auto import tqdm

    engine = inf.engine()
    key = model_key(inf.gguf)
    path = inf.data_dir / "sae" / "corpus" / f"self-{key}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    cache: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            cache[row["key"]] = row["text"]
    wanted = [(i, s) for i in range(len(prompts)) for s in range(n_samples)]
    missing = [(i, s) for i, s in wanted if _ckey(prompts[i], s, max_tokens) not in cache]
    with path.open("a") as f:
        for i, s in tqdm(missing, desc="self-written corpus", disable=not progress or not missing,
                         file=sys.stderr):
            req = GenerationRequest(messages=[{"role": "user", "content": prompts[i]}],
                                    params=SamplingParams(max_tokens=max_tokens, temperature=0.9,
                                                          top_p=0.95, seed=1000 * i + s))
            text = engine.generate(req).text.strip()
            k = _ckey(prompts[i], s, max_tokens)
            cache[k] = text
            f.write(json.dumps({"key": k, "prompt": prompts[i], "sample": s, "text": text}) + "\n")
            f.flush()
    return [(f"self:{i}.{s}", cache[_ckey(prompts[i], s, max_tokens)]) for i, s in wanted
            if cache[_ckey(prompts[i], s, max_tokens)]]


def _ckey(prompt: str, sample: int, max_tokens: int) -> str:
    return f"{sample}|{max_tokens}|{prompt}"


def build_corpus(inf: Inference, *, n_samples: int = 2, max_tokens: int = 200,
                 prompts: tuple[str, ...] = WRITING_PROMPTS, documents: DocumentSource | None = None,
                 progress: bool = True) -> Corpus:
    """The workspace's paragraphs (``documents``: usually ``inf.config.documents``; None: none)
    followed by the model's own answers to ``prompts``."""
    texts, sources = [], []
    for doc_id, text in (documents() if documents is not None else ()):
        for p in paragraphs(text):
            texts.append(p)
            sources.append(f"doc:{doc_id}")
    for src, text in self_written(inf, n_samples, max_tokens, prompts, progress):
        for p in paragraphs(text):
            texts.append(p)
            sources.append(src)
    return Corpus(texts, sources)


def load_corpus(folder: Path) -> Corpus:
    """The corpus an SAE was trained on (frozen in its folder)."""
    path = Path(folder) / "corpus.jsonl"
    if not path.exists():
        raise EmptyCorpus(f"{path} is missing: the SAE was not trained by tinymorph")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return Corpus([r["text"] for r in rows], [r["source"] for r in rows])


def save_corpus(folder: Path, corpus: Corpus) -> None:
    """Freeze ``corpus`` into an SAE folder (atomically: a crash leaves the old file or none)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "corpus.jsonl.tmp"
    tmp.write_text("".join(json.dumps({"source": s, "text": t}) + "\n"
                           for t, s in zip(corpus.texts, corpus.sources)))
    tmp.replace(folder / "corpus.jsonl")


def heldout_texts() -> list[str]:
    """Prose never trained on: evaluation reads only this."""
    return reference_texts()

"""What a feature means: the features of a text, a feature's max-activating examples, a label,
search by text, and the self-explanation scores that pick a steering strength.

* ``FeatureIndex`` runs the SAE's own corpus through the model once and keeps, per feature, its
  top examples (a context window with per-token activations). Labels come from those examples:
  the tokens the feature fires on most, weighted by activation. Search embeds each feature's
  label + example snippets with all-MiniLM-L6-v2 and ranks by cosine to the query.
* Self-explanation (Kharlapenko et al., "Self-explaining SAE features"): put the feature's
  direction, at scale s, in place of the residual at the placeholder token of a prompt asking
  what a word means, and read two scores at the end of the prompt:
  - self-similarity: cosine between the residual at the last prompt token (a later layer) and
    the feature direction — does the model still "hold" the feature when it is about to answer?
  - entropy of the first answer token — low when the feature tells the model what to say.
  composite(s) = alpha * similarity + (1 - alpha) * (1 - entropy / log|V|); the entropy term is
  flipped and normalised so that higher is better for both. The best s over a grid is the
  recommended steering strength (both are in residual norms N_L).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..embeddings import Embedder
from ..exceptions import SAEIncompatible, UnknownFeature
from ._torch import TorchSAE, layer_activations, rewrite_layer, windows
from .corpus import heldout_texts, load_corpus

if TYPE_CHECKING:
    from ..registry import Inference

__all__ = [
    "FeatureIndex",
    "SelfExplanation",
    "TokenActivations",
    "feature_card",
    "self_explain",
    "text_features",
]

N_EXAMPLES = 8
SCALES = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class TokenActivations:
    tokens: list[str]
    top: list[dict]  # [{feature, max, mean, acts: [per token]}]


def _pieces(tok, ids: Sequence[int]) -> list[str]:
    return [tok.decode([i]) for i in ids]


def text_features(inf: Inference, sae_id: str, text: str, top: int = 10) -> TokenActivations:
    """The features most active on ``text`` (by max over tokens, first token skipped)."""
    engine = inf.torch_engine().load()
    sae = inf.saes.get(sae_id)
    tsae = TorchSAE(sae)
    ids = engine.tokenize(text)
    if len(ids) < 2:
        raise SAEIncompatible("the text needs at least two tokens", param="text")
    with engine.lock:
        (_, a), = list(layer_activations(engine.model, [ids], sae.layer))
    f = tsae.encode(a)
    f[0] = 0
    mx = f.max(0).values
    order = torch.argsort(mx, descending=True)[:top]
    return TokenActivations(_pieces(engine.tokenizer, ids), [
        {"feature": int(i), "max": round(float(mx[i]), 4), "mean": round(float(f[1:, i].mean()), 4),
         "acts": [round(float(v), 3) for v in f[:, i]]} for i in order if mx[i] > 0])


class FeatureIndex:
    """Per-feature top examples and labels over the SAE's training corpus (built once, cached)."""

    def __init__(self, inf: Inference, sae_id: str) -> None:
        self.inf, self.sae_id = inf, sae_id
        self.sae = inf.saes.get(sae_id)
        self.path = inf.saes.folder(sae_id) / "feature_index.json"
        self._data: dict | None = None
        self._emb: np.ndarray | None = None

    @property
    def data(self) -> dict:
        if self._data is None:
            self._data = json.loads(self.path.read_text()) if self.path.exists() else self.build()
        return self._data

    def build(self, ctx: int = 64) -> dict:
        engine = self.inf.torch_engine().load()
        tok = engine.tokenizer
        tsae = TorchSAE(self.sae)
        try:
            corpus = load_corpus(self.inf.saes.folder(self.sae_id))
            texts, sources = corpus.texts, corpus.sources
        except Exception:  # noqa: BLE001 - imported SAE: index the reference prose instead
            texts = heldout_texts()
            sources = ["reference"] * len(texts)
        # Each window remembers the text it came from ("doc:<id>", "self:...", "reference"), so
        # an example from a document is shown only to those who may read that document.
        wins, win_sources = [], []
        for text, source in zip(texts, sources):
            cut = windows(tok, [text], ctx)
            wins += cut
            win_sources += [source] * len(cut)
        d = self.sae.d_sae
        best: list[list[tuple[float, int, int]]] = [[] for _ in range(d)]  # (act, window, pos)
        fires = np.zeros(d)
        n = 0
        acts_by_win: dict[int, torch.Tensor] = {}
        with engine.lock:
            for w, a in layer_activations(engine.model, wins, self.sae.layer):
                f = tsae.encode(a)
                f[0] = 0
                acts_by_win[w] = f.to_sparse()
                fires += (f[1:] > 0).sum(0).numpy()
                n += f.shape[0] - 1
                mx, pos = f.max(0)
                for j in torch.nonzero(mx > 0).flatten().tolist():
                    best[j].append((float(mx[j]), w, int(pos[j])))
        features = []
        for j in range(d):
            top = sorted(best[j], reverse=True)[:N_EXAMPLES]
            examples = []
            for act, w, pos in top:
                col = acts_by_win[w].to_dense()[:, j]
                lo, hi = max(0, pos - 12), min(len(wins[w]), pos + 4)
                examples.append({"tokens": _pieces(tok, wins[w][lo:hi]),
                                 "acts": [round(float(v), 3) for v in col[lo:hi]],
                                 "max": round(act, 4), "at": pos - lo, "source": win_sources[w]})
            features.append({"feature": j, "density": fires[j] / max(n, 1),
                             "max_activation": round(top[0][0], 4) if top else 0.0,
                             "label": _label(examples), "examples": examples})
        data = {"sae_id": self.sae_id, "tokens": n, "features": features}
        self.path.write_text(json.dumps(data))
        return data

    def feature(self, j: int) -> dict:
        if not 0 <= j < self.sae.d_sae:
            raise UnknownFeature(f"SAE {self.sae_id} has features 0..{self.sae.d_sae - 1}, not {j}")
        return self.data["features"][j]

    def _embeddings(self) -> np.ndarray:
        if self._emb is None:
            path = self.path.with_suffix(".emb.npy")
            if path.exists():
                self._emb = np.load(path)
            else:
                docs = [f"{f['label']}: " + " | ".join("".join(e["tokens"]) for e in f["examples"][:3])
                        for f in self.data["features"]]
                self._emb = np.asarray(self.inf_embedder().embed(docs)[0], np.float32)
                np.save(path, self._emb)
        return self._emb

    def inf_embedder(self):
        return _EMBEDDER.setdefault("e", Embedder())

    def search(self, query: str, limit: int = 20) -> list[tuple[int, float]]:
        """Live features ranked by cosine between the query and their label + examples."""
        q = np.asarray(self.inf_embedder().embed([query])[0][0], np.float32)
        scores = self._embeddings() @ q
        live = np.array([f["max_activation"] > 0 for f in self.data["features"]])
        scores = np.where(live, scores, -np.inf)
        order = np.argsort(-scores)[:limit]
        return [(int(j), float(scores[j])) for j in order if np.isfinite(scores[j])]


_EMBEDDER: dict = {}


def _label(examples: list[dict]) -> str:
    """The tokens the feature fires on most (activation-weighted over its top examples)."""
    mass: Counter = Counter()
    for e in examples:
        for t, a in zip(e["tokens"], e["acts"]):
            if a > 0 and t.strip():
                mass[t.strip().lower()] += a
    return " / ".join(t for t, _ in mass.most_common(3)) or "(no activations)"


@dataclass
class SelfExplanation:
    feature: int
    scales: list[float]
    similarity: list[float]
    entropy: list[float]  # nats
    composite: list[float]
    best_scale: float
    explanation: str  # the model's greedy answer at the best scale
    alpha: float

    @property
    def recommended(self) -> tuple[float, float]:
        return (round(self.best_scale / 2, 3), round(self.best_scale, 3))


PROMPT = 'What is the meaning of the word "X"? The meaning of the word "X" is'


def self_explain(inf: Inference, sae_id: str, feature: int, scales: Sequence[float] = SCALES,
                 alpha: float = 0.5, read_layer: int | None = None, explain_tokens: int = 10) -> SelfExplanation:
    engine = inf.torch_engine().load()
    model, tok, info = engine.model, engine.tokenizer, engine.info
    sae = inf.saes.get(sae_id)
    u = torch.from_numpy(sae.direction(feature) / np.linalg.norm(sae.direction(feature)))
    ids = engine.tokenize(PROMPT)
    x_id = engine.tokenize('"X"')[1] if len(engine.tokenize('"X"')) > 1 else engine.tokenize("X")[0]
    slots = [i for i, t in enumerate(ids) if t == x_id]
    if not slots:
        raise SAEIncompatible("cannot find the placeholder token in the self-explanation prompt")
    read = read_layer if read_layer is not None else min(info.n_layers - 1, sae.layer + (info.n_layers - sae.layer) // 2)
    norm = info.layer_norms[sae.layer]
    sims, ents = [], []
    log_v = math.log(model.config.vocab_size)
    with engine.lock, torch.inference_mode():
        for s in scales:
            def put(h: torch.Tensor, s=s) -> torch.Tensor:
                if h.shape[1] <= max(slots):  # generation steps past the prompt: leave alone
                    return h
                h = h.clone()
                h[:, slots] = s * norm * u
                return h

            cap: list[torch.Tensor] = []
            hook = model.model.layers[read].register_forward_hook(
                lambda m, a, o, cap=cap: cap.append((o[0] if isinstance(o, tuple) else o)[0, -1].float()))
            try:
                with rewrite_layer(model, sae.layer, put):
                    logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()
            finally:
                hook.remove()
            p = torch.softmax(logits, -1)
            ents.append(float(-(p * torch.log(p + 1e-12)).sum()))
            sims.append(float(torch.nn.functional.cosine_similarity(cap[0], u, dim=0)))
        comp = [alpha * a + (1 - alpha) * (1 - h / log_v) for a, h in zip(sims, ents)]
        best = int(np.argmax(comp))

        def put_best(h: torch.Tensor) -> torch.Tensor:
            if h.shape[1] <= max(slots):
                return h
            h = h.clone()
            h[:, slots] = scales[best] * norm * u
            return h

        with rewrite_layer(model, sae.layer, put_best):
            out = model.generate(torch.tensor([ids]), max_new_tokens=explain_tokens, do_sample=False,
                                 use_cache=True, pad_token_id=tok.pad_token_id or 0)
    text = tok.decode(out[0, len(ids):], skip_special_tokens=True).strip()
    return SelfExplanation(feature, list(scales), sims, ents, comp, float(scales[best]), text, alpha)


def visible(example: dict, readable: set[str] | None) -> bool:
    """Whether a caller who may read the documents ``readable`` (None: all of them) may see an
    example: one from a document only if they may read it; the model's own writing and the
    reference prose always; an example of unknown origin (an index from before origins were
    kept) only by whoever may read everything."""
    source = example.get("source")
    if readable is None:
        return True
    if source is None:
        return False
    return not source.startswith("doc:") or source[4:] in readable


def feature_card(inf: Inference, sae_id: str, feature: int, explain: bool = True,
                 readable: set[str] | None = None) -> dict:
    """Everything the frontend shows for one feature (the self-explanation is cached per feature),
    with only the examples the caller may read (see :func:`visible`)."""
    index = FeatureIndex(inf, sae_id)
    f = index.feature(feature)
    model = inf.torch_engine().info
    info = inf.saes.feature_info(sae_id, feature, model)
    # The same guide as /api/sae/features and a steering term without strength (one source of truth).
    card = {"id": f"{sae_id}#{feature}", "sae_id": sae_id, "feature": feature, "layer": info.layer,
            "label": f["label"], "density": f["density"], "max_activation": f["max_activation"],
            "examples": [e for e in f["examples"] if visible(e, readable)],
            "typical_strength": round(info.typical_strength, 4),
            **inf.saes.feature_guide(sae_id, feature, model).to_json(), "scores": None}
    if explain:
        cache = inf.saes.folder(sae_id) / "self_explanations.json"
        cached = json.loads(cache.read_text()) if cache.exists() else {}
        if str(feature) not in cached:
            cached[str(feature)] = asdict(self_explain(inf, sae_id, feature))
            cache.write_text(json.dumps(cached))
        se = cached[str(feature)]
        card["scores"] = se
    return card

"""How good is an SAE: sparsity, reconstruction, and what the reconstruction costs the model.

* L0: active latents per token.
* FVU: fraction of variance unexplained, sum ||x - x_hat||^2 / sum ||x - mean(x)||^2.
* CE loss recovered: splice x_hat into the forward pass at the SAE's layer and compare the
  next-token loss with the clean run and with the layer zero-ablated:
  (CE_zero - CE_sae) / (CE_zero - CE_clean). 1 is a perfect substitute, 0 as bad as nothing.
* Dead latents never fire on the evaluation text; dense ones fire on more than 10% of tokens.

Evaluation reads the held-out reference prose plus the SAE's own training corpus for densities
(a latent that fires only in the writer's documents is not dead). Position 0 of every window is
left alone (the SAE never saw the attention sink), as in training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ._torch import TorchSAE, layer_activations, rewrite_layer, windows
from .catalog import SAECatalog
from .corpus import heldout_texts, load_corpus

if TYPE_CHECKING:
    from ..registry import Inference

__all__ = ["DENSE_THRESHOLD", "EvalResult", "evaluate", "feature_density", "plot_density"]

#: A latent firing on more than this fraction of tokens is "dense" (more a bias than a feature).
DENSE_THRESHOLD = 0.1


@dataclass
class EvalResult:
    sae_id: str
    layer: int
    d_sae: int
    k: int | None
    tokens: int  # held-out tokens the reconstruction metrics are over
    l0: float
    fvu: float
    ce_clean: float
    ce_sae: float
    ce_zero: float
    ce_recovered: float
    dead: int
    dense: int
    density_tokens: int  # tokens the densities are over (held-out + training corpus)

    def rows(self) -> list[tuple[str, str]]:
        return [("L0 (active latents / token)", f"{self.l0:.2f}"), ("FVU", f"{self.fvu:.4f}"),
                ("CE clean", f"{self.ce_clean:.4f}"), ("CE with SAE spliced in", f"{self.ce_sae:.4f}"),
                ("CE layer zero-ablated", f"{self.ce_zero:.4f}"),
                ("CE loss recovered", f"{self.ce_recovered:.2%}"),
                (f"dead latents (of {self.d_sae})", f"{self.dead} ({self.dead / self.d_sae:.1%})"),
                (f"dense latents (>{DENSE_THRESHOLD:.0%} of tokens)", f"{self.dense}"),
                ("held-out tokens", str(self.tokens)), ("density tokens", str(self.density_tokens))]


def feature_density(tsae: TorchSAE, model, wins: Sequence[list[int]], layer: int) -> tuple[np.ndarray, int]:
    """Fraction of tokens (first of each window skipped) on which each latent fires."""
    fires = torch.zeros(tsae.W_dec.shape[0])
    n = 0
    for _, a in layer_activations(model, wins, layer):
        f = tsae.encode(a[1:])
        fires += (f > 0).float().sum(0)
        n += f.shape[0]
    return (fires / max(n, 1)).numpy(), n


@torch.inference_mode()
def _ce(model, wins: Sequence[list[int]]) -> float:
    total, n = 0.0, 0
    for w in wins:
        logits = model(input_ids=torch.tensor([w]), use_cache=False).logits[0].float()
        total += F.cross_entropy(logits[:-1], torch.tensor(w[1:]), reduction="sum").item()
        n += len(w) - 1
    return total / max(n, 1)


def evaluate(inf: Inference, sae_id: str, texts: Sequence[str] | None = None, ctx: int = 128,
             plot: bool = True) -> EvalResult:
    engine = inf.torch_engine().load()
    model, tok = engine.model, engine.tokenizer
    sae = inf.saes.get(sae_id)
    tsae, layer = TorchSAE(sae), sae.layer
    held = windows(tok, list(texts or heldout_texts()), ctx)
    folder = inf.saes.folder(sae_id)
    try:
        train_wins = windows(tok, load_corpus(folder).texts, ctx)
    except Exception:  # noqa: BLE001 - an imported SAE has no corpus: densities on held-out only
        train_wins = []

    with engine.lock:
        # reconstruction
        sq_err, sq_tot, l0s, xs = 0.0, 0.0, [], []
        for _, a in layer_activations(model, held, layer):
            x = a[1:]
            f = tsae.encode(x)
            sq_err += ((x - tsae.decode(f)) ** 2).sum().item()
            xs.append(x)
            l0s.append((f > 0).float().sum(-1))
        allx = torch.cat(xs)
        sq_tot = ((allx - allx.mean(0)) ** 2).sum().item()
        # the model's loss, clean / with the SAE / without the layer's output
        ce_clean = _ce(model, held)

        def spliced(h: torch.Tensor) -> torch.Tensor:
            out = h.clone()
            out[:, 1:] = tsae.decode(tsae.encode(h[:, 1:]))
            return out

        def zeroed(h: torch.Tensor) -> torch.Tensor:
            out = h.clone()
            out[:, 1:] = 0
            return out

        with rewrite_layer(model, layer, spliced):
            ce_sae = _ce(model, held)
        with rewrite_layer(model, layer, zeroed):
            ce_zero = _ce(model, held)
        density, n_dens = feature_density(tsae, model, held + train_wins, layer)

    result = EvalResult(
        sae_id, layer, sae.d_sae, sae.k, int(allx.shape[0]), float(torch.cat(l0s).mean()),
        sq_err / sq_tot, ce_clean, ce_sae, ce_zero,
        (ce_zero - ce_sae) / (ce_zero - ce_clean) if ce_zero != ce_clean else float("nan"),
        int((density == 0).sum()), int((density > DENSE_THRESHOLD).sum()), n_dens)
    out = folder / "eval"
    out.mkdir(exist_ok=True)
    np.save(out / "density.npy", density.astype(np.float32))
    (out / "eval.json").write_text(json.dumps(asdict(result), indent=1))
    if plot:
        plot_density(density, out / "density.png", f"{sae_id} (layer {layer})")
    catalog = SAECatalog(inf.config.database_url)
    if any(r["id"] == sae_id for r in catalog.list()):  # an SAE copied in by hand has no row
        catalog.set_metrics(sae_id, asdict(result))
    return result


def plot_density(density: np.ndarray, path: Path, title: str) -> Path:
    """Histogram of log10 firing frequency per latent; dead latents get their own bar at the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    live = density[density > 0]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if live.size:
        ax.hist(np.log10(live), bins=40, color="#4c72b0", label=f"live ({live.size})")
    floor = np.log10(live.min()) - 0.5 if live.size else -6
    dead = int((density == 0).sum())
    if dead:
        ax.bar([floor], [dead], width=0.2, color="#c44e52", label=f"dead ({dead})")
    ax.axvline(np.log10(DENSE_THRESHOLD), color="#dd8452", ls="--", label=f"dense > {DENSE_THRESHOLD:g}")
    ax.set_xlabel("log10(fraction of tokens the latent fires on)")
    ax.set_ylabel("latents")
    ax.set_title(f"Activation density: {title}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

"""Train a TopK SAE on the default model's residual stream at one layer, with sae-lens.

sae-lens's ``SAETrainer`` does the optimisation (TopK with the AuxK loss for dead latents, Adam,
LR warm-up and decay, activation-norm scaling folded into the weights at the end, checkpoints);
we only provide the activations. They come from the torch engine (HF ``model.model.layers[L]``,
the place steering acts on), streamed from the corpus of ``corpus`` through a shuffle buffer,
with each window's first token dropped (an attention sink whose norm is tens of times the rest).
No TransformerLens model, no dataset download, no wandb.

Resuming: every run writes ``checkpoints/<samples>/`` (weights, optimiser and scaler state); a run
with the same SAE id picks up the newest one. The corpus is frozen into the SAE folder on the
first run, so a resumed run and the later feature index see the same text.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .._modelfiles import model_key
from ..exceptions import EmptyCorpus, SAETrainingError
from ._torch import layer_activations, windows
from .catalog import SAECatalog
from .corpus import Corpus, build_corpus, load_corpus, save_corpus

if TYPE_CHECKING:
    from ..registry import Inference

__all__ = ["ActivationStream", "TrainConfig", "TrainResult", "sae_id_for", "train"]


@dataclass(frozen=True)
class TrainConfig:
    layer: int
    d_sae: int = 4096
    k: int = 32
    tokens: int = 200_000
    batch_size: int = 256
    lr: float | None = None  # None: 2e-4 * sqrt(16384 / d_sae) (Gao et al.'s scaling), capped
    ctx: int = 128  # tokens per window
    seed: int = 0
    device: str = "cpu"
    checkpoints: int = 4  # intermediate checkpoints (what a resumed run starts from)
    corpus_samples: int = 2  # self-written answers per writing prompt
    corpus_tokens: int = 200  # tokens per self-written answer

    def learning_rate(self) -> float:
        return self.lr or min(2e-3, 2e-4 * math.sqrt(16384 / self.d_sae))


@dataclass
class TrainResult:
    sae_id: str
    folder: Path
    tokens: int
    resumed_from: int = 0  # samples already done by the checkpoint we started from
    skipped: bool = False  # an SAE with this id and config was already trained
    losses: dict = field(default_factory=dict)


def sae_id_for(base_name: str, cfg: TrainConfig) -> str:
    return f"{base_name}-L{cfg.layer}-{cfg.d_sae}-k{cfg.k}"


class ActivationStream:
    """sae-lens ``DataProvider``: an endless iterator of (batch, d_model) activation batches.

    Windows are visited in a fresh random order each epoch; activations go through a shuffle
    buffer of ``buffer_batches`` batches so one batch mixes many texts. A corpus whose activations
    fit in ``cache_bytes`` is run through the model once and replayed (the forward pass is what
    costs on CPU; a small corpus is seen for many epochs).
    """

    def __init__(self, model, lock, wins: list[list[int]], layer: int, batch_size: int,
                 seed: int = 0, buffer_batches: int = 16, pad: int = 0, total: int | None = None,
                 cache_bytes: int = 1 << 29, progress: bool = True) -> None:
        if not wins:
            raise EmptyCorpus("no token windows to train on")
        self.model, self.lock, self.wins, self.layer = model, lock, wins, layer
        self.batch_size, self.pad = batch_size, pad
        self.buffer_tokens = batch_size * buffer_batches
        self.gen = torch.Generator().manual_seed(seed)
        self.buffer = torch.empty(0)
        self._order: list[int] = []
        d = model.config.hidden_size
        self._cache: dict[int, torch.Tensor] | None = (
            {} if sum(len(w) for w in wins) * d * 4 <= cache_bytes else None)
        from tqdm.auto import tqdm

        self.pbar = tqdm(total=total, desc=f"activations L{layer}", unit="tok", disable=not progress,
                         file=sys.stderr)

    def _more(self, n_windows: int = 16) -> torch.Tensor:
        if len(self._order) < n_windows:
            self._order += torch.randperm(len(self.wins), generator=self.gen).tolist()
        take, self._order = self._order[:n_windows], self._order[n_windows:]
        todo = [i for i in take if self._cache is None or i not in self._cache]
        got = {}
        if todo:
            with self.lock:
                for j, a in layer_activations(self.model, [self.wins[i] for i in todo], self.layer,
                                              pad=self.pad):
                    got[todo[j]] = a[1:].clone()
            if self._cache is not None:
                self._cache.update(got)
        return torch.cat([got[i] if i in got else self._cache[i] for i in take])

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        if self.buffer.shape[0] < self.batch_size:
            parts = [self.buffer] if self.buffer.numel() else []
            have = self.buffer.shape[0] if self.buffer.numel() else 0
            while have < self.buffer_tokens:
                a = self._more()
                parts.append(a)
                have += a.shape[0]
            buf = torch.cat(parts)
            self.buffer = buf[torch.randperm(buf.shape[0], generator=self.gen)]
        out, self.buffer = self.buffer[:self.batch_size], self.buffer[self.batch_size:]
        self.pbar.update(out.shape[0])
        return out


def _latest_checkpoint(ckpt_dir: Path, max_samples: int) -> Path | None:
    done = [p for p in ckpt_dir.glob("*") if p.name.isdigit() and (p / "trainer_state.pt").exists()
            and int(p.name) <= max_samples]
    return max(done, key=lambda p: int(p.name)) if done else None


def train(inf: Inference, cfg: TrainConfig, *, corpus: Corpus | None = None, resume: bool = True,
          progress: bool = True, sae_id: str | None = None) -> TrainResult:
    """Train (or resume, or skip when already done), save SAELens format, register in the DB."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    engine = inf.torch_engine().load()
    info = engine.info
    if not 0 <= cfg.layer < info.n_layers:
        raise SAETrainingError(f"layer {cfg.layer} is out of range 0..{info.n_layers - 1}")
    if cfg.k < 1 or cfg.d_sae < cfg.k or cfg.tokens < cfg.batch_size:
        raise SAETrainingError("need 1 <= k <= d_sae and tokens >= batch size")
    sae_id = sae_id or sae_id_for(inf.base_name, cfg)
    folder = inf.saes.folder(sae_id)
    # Outside the SAE folder: the registry lists every folder holding a cfg.json as an SAE.
    ckpt_dir = inf.data_dir / "sae" / "checkpoints" / sae_id
    catalog = SAECatalog(inf.config.database_url)
    run_file = folder / "train_config.json"
    if resume and run_file.exists() and json.loads(run_file.read_text()) != asdict(cfg):
        raise SAETrainingError(f"{folder} holds a run with another configuration; pass a new id or "
                               "--no-resume to start over")
    if resume and (folder / "sae_weights.safetensors").exists() and run_file.exists():
        return TrainResult(sae_id, folder, cfg.tokens, cfg.tokens, skipped=True)
    if not resume:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(ckpt_dir, ignore_errors=True)

    if resume and (folder / "corpus.jsonl").exists():
        corpus = load_corpus(folder)
    else:
        corpus = corpus or build_corpus(inf, n_samples=cfg.corpus_samples, max_tokens=cfg.corpus_tokens,
                                        documents=inf.config.documents, progress=progress)
        save_corpus(folder, corpus)
    if not corpus.texts:
        raise EmptyCorpus("no documents and no self-written text to train on")
    run_file.write_text(json.dumps(asdict(cfg)))
    wins = windows(engine.tokenizer, corpus.texts, cfg.ctx)
    n_tokens = sum(len(w) - 1 for w in wins)
    provenance = {"corpus": corpus.provenance(), "corpus_tokens": n_tokens,
                  "epochs": round(cfg.tokens / max(n_tokens, 1), 2), "config": asdict(cfg),
                  "trainer": "sae-lens SAETrainer, TopKTrainingSAE"}
    catalog.upsert(sae_id, model_key=model_key(inf.gguf), layer=cfg.layer, d_in=info.d_model,
                   d_sae=cfg.d_sae, k=cfg.k, path=str(folder), status="training", provenance=provenance)

    steps = cfg.tokens // cfg.batch_size
    sae_cfg = TopKTrainingSAEConfig(
        d_in=info.d_model, d_sae=cfg.d_sae, k=cfg.k, dtype="float32", device=cfg.device,
        normalize_activations="expected_average_only_in",
        metadata=SAEMetadata(hook_name=f"blocks.{cfg.layer}.hook_resid_post", hook_layer=cfg.layer,
                             model_name=inf.base_name, model_key=model_key(inf.gguf),
                             context_size=cfg.ctx, prepend_bos=False))
    trainer_cfg = SAETrainerConfig(
        total_training_samples=cfg.tokens, train_batch_size_samples=cfg.batch_size,
        lr=cfg.learning_rate(), lr_end=cfg.learning_rate() / 10, lr_warm_up_steps=min(100, steps // 20), lr_decay_steps=steps // 5,
        device=cfg.device, dead_feature_window=max(20, steps // 10),
        feature_sampling_window=max(50, steps // 4), n_checkpoints=cfg.checkpoints,
        checkpoint_path=str(ckpt_dir), logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=min(16, max(2, steps // 10)))

    torch.manual_seed(cfg.seed)
    start = _latest_checkpoint(ckpt_dir, cfg.tokens) if resume else None
    sae = (TopKTrainingSAE.load_from_disk(start, device=cfg.device) if start
           else TopKTrainingSAE(sae_cfg))
    done = int(start.name) if start else 0
    stream = ActivationStream(engine.model, engine.lock, wins, cfg.layer, cfg.batch_size,
                              seed=cfg.seed + done, pad=engine.tokenizer.pad_token_id or 0,
                              total=cfg.tokens - done, progress=progress)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=stream)
    if start:
        trainer.load_trainer_state(start)
        trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t > done]
        print(f"[tinymorph] resuming {sae_id} from {done} of {cfg.tokens} tokens", file=sys.stderr)
    sae = trainer.fit()
    stream.pbar.close()
    # Unit-norm decoder rows: the numpy loader (and steering) read the weights as plain TopK.
    sae.fold_W_dec_norm()
    sae.cfg.rescale_acts_by_decoder_norm = False
    sae.save_inference_model(folder)
    catalog.upsert(sae_id, status="ready", tokens_trained=trainer.n_training_samples)
    inf.saes.forget(sae_id)
    return TrainResult(sae_id, folder, trainer.n_training_samples, done)

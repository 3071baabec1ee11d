"""Prompt-imitating steering (PSR): learn what an instruction does inside the model, as one
direction and a coefficient per token, by imitating the prompted model on text it writes itself.

After "Steer Like the LLM" (ICML 2026). A prompt such as "Write about winter." changes every
later activation, by different amounts at different tokens. PSR learns, at one layer L,

    h_t <- h_t + a_t * v,     a_t = softplus(w . h_t / |h_t| + b)

(``spec.gate_coefficients``): a direction v and a small gate (w, b) that reads the *unprompted*
model's own activation at each position and says how much of v that token needs. The training
data is the model's own writing:

1. The model writes ``n_texts`` short texts from neutral openings WITH the instruction in the
   prompt (chat tasks and plain-text openings, sampled).
2. Each text is read twice by the torch model: with the instruction (the teacher) and without
   (the student). The continuation tokens are shared, so positions line up one to one.
3. v starts at DiffMean (mean teacher - student residual over those positions), a_t at 1.
4. Stage 1, activations: fit v, w, b so that student h_t + a_t v matches teacher h_t at layer L
   (cheap: the activations are cached, no forward pass per step).
5. Stage 2, next tokens: the student's layer-L states are cached, so each step only replays the
   blocks above L on the steered states; minimise KL(teacher next-token distribution || steered
   student's) over the continuation. The teacher distribution is kept as its ``top_k`` tokens
   plus one bucket for the rest (the KL of that coarsening: a lower bound of the full KL).

Served as ``{"source": "psr:NAME"}``. Strength is in typical residual norms like every other
source (``spec.py``): the stored coefficients are divided by their mean over the training text, so
strength s adds s * N_L * (a_t / mean a) * v/|v|, and the strength training arrived at is
``PSRVector.strength``. Torch and vLLM evaluate a_t per token in a hook; a llama.cpp control vector
is one constant per layer, so there a_t is its mean (the constant-coefficient approximation, which
the API says it makes).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..exceptions import InvalidSteering
from ._envconfig import from_env
from .spec import gate_coefficients

__all__ = ["PSRConfig", "PSRVector", "train", "contexts", "example_contexts", "MAX_INSTRUCTION_CHARS",
           "check_instruction"]

#: An instruction is a sentence or two ("more formal", "write about winter"), not a document.
MAX_INSTRUCTION_CHARS = 300

#: Neutral chat tasks and plain-text openings the model writes from (the instruction is added for
#: the teacher only). Varied on purpose: the direction should carry the instruction, not a genre.
CHAT_TASKS = ("Write a short paragraph.", "Tell me a short story.", "Write a few sentences about your weekend.",
              "Describe a place you know well.", "Write the opening of a novel.", "Write a short letter to a friend.",
              "Write a paragraph for a blog.", "Describe an ordinary morning.")
OPENINGS = ("The harbour was quiet that morning.", "I have lived in this town for eleven years.",
            "The meeting started late, as usual.", "She opened the letter at the kitchen table.",
            "Our street has one shop, one tree and one lamp.", "The train stopped between two stations.",
            "Every family has a story it does not tell.", "He had never been good at waiting.")


@dataclass(frozen=True)
class PSRConfig:
    #: None: a third of the way up (where CAA vectors are built too).
    layer: int | None = None
    n_texts: int = 16
    #: Tokens per self-written text (at least half of them: end-of-text is held back until then).
    max_tokens: int = 48
    temperature: float = 0.8
    #: Stage 1 (activation imitation on cached states): cheap, many steps.
    act_steps: int = 300
    act_lr: float = 0.003
    #: Stage 2 (next-token imitation): each step replays the blocks above the layer on ``batch`` texts.
    kl_steps: int = 60
    kl_lr: float = 0.002
    batch: int = 4
    #: Teacher distribution kept per position: its top_k tokens and one bucket for the rest.
    top_k: int = 64
    seed: int = 0

    @classmethod
    def from_env(cls) -> "PSRConfig":
        """Defaults, overridden by ``TINYMORPH_PSR`` (a JSON object of fields; the tests' tiny builds)."""
        return from_env(cls, "TINYMORPH_PSR")


def check_instruction(instruction: Any) -> str:
    """The instruction, stripped; InvalidSteering (a 400) saying what is wrong otherwise."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise InvalidSteering("instruction: say what the text should do, e.g. 'write about winter'",
                              param="instruction")
    if len(instruction.strip()) > MAX_INSTRUCTION_CHARS:
        raise InvalidSteering(f"instruction: at most {MAX_INSTRUCTION_CHARS} characters", param="instruction")
    return instruction.strip()


def contexts(instruction: str, render_chat: Callable[[list[dict]], str], n: int) -> list[tuple[str, str]]:
    """``n`` (teacher prefix, student prefix) pairs: chat tasks and plain openings, alternating."""
    sentence = instruction[0].upper() + instruction[1:]
    sentence += "" if sentence[-1] in ".!?" else "."
    out = []
    for i in range(n):
        if i % 2 == 0:
            task = CHAT_TASKS[(i // 2) % len(CHAT_TASKS)]
            out.append((render_chat([{"role": "user", "content": f"{task} {sentence}"}]),
                        render_chat([{"role": "user", "content": task}])))
        else:
            opening = OPENINGS[(i // 2) % len(OPENINGS)]
            out.append((f"{sentence}\n\n{opening}", opening))
    return out


def example_contexts(examples: Sequence[str], n: int, per_context: int = 2,
                     max_chars: int = 600) -> list[tuple[str, str]]:
    """``n`` (teacher prefix, student prefix) pairs for learning a voice from a writer's own
    paragraphs: the teacher reads ``per_context`` of them before a neutral opening, the student
    the opening alone. PSR then learns what those examples do inside the model (in-context
    imitation) as a steering it can apply without them in the prompt."""
    texts = [e.strip()[:max_chars] for e in examples if e.strip()]
    if not texts:
        raise InvalidSteering("examples: at least one non-empty paragraph", param="examples")
    out = []
    for i in range(n):
        shown = [texts[(i * per_context + j) % len(texts)] for j in range(min(per_context, len(texts)))]
        opening = OPENINGS[i % len(OPENINGS)]
        out.append(("\n\n".join([*shown, opening]), opening))
    return out


@dataclass
class PSRVector:
    """What training produces: the direction and gate at one layer, and how training went."""
    instruction: str
    layer: int
    #: The learned direction, unnormalised (its norm is part of the trained strength).
    vector: np.ndarray
    gate_w: np.ndarray
    gate_b: float
    #: Mean of softplus(w . h/|h| + b) over the training text: served coefficients are divided by it.
    gate_mean: float
    #: Trained strength in typical residual norms: gate_mean * |vector| / N_layer.
    strength: float
    #: Imitation losses: KL (nats/token) unsteered, at DiffMean, after each stage; activation MSE.
    losses: dict[str, float]
    texts: list[str] = field(default_factory=list)
    config: PSRConfig = PSRConfig()
    seconds: float = 0.0

    def gate(self) -> dict[str, Any]:
        return {"w": self.gate_w.astype(np.float32).tolist(), "b": self.gate_b, "mean": self.gate_mean}

    def provenance(self) -> dict[str, Any]:
        """What the library stores with the vector (the gate is read back by ``VectorLibrary.psr_vectors``)."""
        return {"method": "psr", "instruction": self.instruction, "layers": [self.layer],
                "strength_trained": float(self.strength), "losses": self.losses, "texts": len(self.texts),
                "examples": self.texts[:3], "config": asdict(self.config), "seconds": round(self.seconds, 1),
                "gates": {str(self.layer): self.gate()}}


@dataclass
class _Example:
    """One self-written text, read by teacher and student (positions aligned on the continuation)."""
    h_student: Any  # (1, T_s, d) residual after block L, whole student sequence
    kwargs: dict  # what block L+1 was called with (rotary embeddings, mask), to replay from L
    rows: Any  # student positions whose next token is a continuation token
    h_teacher: Any  # (n, d) teacher residual at the aligned positions
    top_ids: Any  # (n, k) teacher's top-k next tokens
    top_logp: Any  # (n, k) their log-probabilities
    rest_logp: Any  # (n,) log of the probability left over


def train(engine: Any, instruction: str, config: PSRConfig = PSRConfig(), writer: Any = None,
          progress: Callable[[float, str], None] | None = None, examples: Sequence[str] | None = None) -> PSRVector:
    """Learn PSR steering for ``instruction`` with the torch ``engine`` (a loaded ``TorchEngine``).

    ``writer`` writes the training texts (any engine; default ``engine``: llama.cpp is faster).
    ``progress(fraction, message)`` is called as training goes (a REST build reports it).
    ``examples``: imitate these paragraphs shown in context instead of the instruction (a voice:
    ``example_contexts``); ``instruction`` then only names what was learnt."""
    import torch

    t0 = time.monotonic()
    instruction = check_instruction(instruction)
    report = progress or _print_progress
    engine.load()
    info = engine.info
    layer = config.layer if config.layer is not None else info.n_layers // 3
    if not 0 <= layer < info.n_layers:
        raise InvalidSteering(f"layer {layer} out of range 0..{info.n_layers - 1}", param="layers")
    norm = info.layer_norms[layer]

    # 1. The model writes texts with the instruction in its prompt.
    if examples is not None:
        prefixes = example_contexts(examples, config.n_texts)
    else:
        prefixes = contexts(instruction, lambda m: engine.render_prompt(_chat_request(m)), config.n_texts)
    texts = _write(writer or engine, prefixes, config, lambda f: report(0.4 * f, "writing texts"))
    # 2. Teacher and student read them; positions align on the continuation tokens.
    examples = []
    for i, (teacher, student, text) in enumerate(texts):
        examples.append(_read(engine, teacher, student, text, layer, config.top_k))
        report(0.4 + 0.1 * (i + 1) / len(texts), "reading activations")
    h_s = torch.cat([ex.h_student[0, ex.rows] for ex in examples])
    h_t = torch.cat([ex.h_teacher for ex in examples])
    everywhere = torch.cat([ex.h_student[0, 1:] for ex in examples])  # the gate's mean: all steered tokens

    # 3. DiffMean start, coefficient 1 everywhere. v is learnt in units of the layer's typical norm.
    v = ((h_t - h_s).mean(0) / norm).clone().requires_grad_(True)
    w = torch.zeros(info.d_model, requires_grad=True)
    b = torch.tensor(math.log(math.e - 1.0), requires_grad=True)  # softplus(b) = 1

    def kl(ex: _Example, steer: bool = True) -> torch.Tensor:
        h = ex.h_student
        if steer:
            h = h + gate_coefficients(h, w, b).unsqueeze(-1) * (norm * v)
        return _kl(engine, h, ex, layer)

    def kl_all() -> float:
        with torch.no_grad(), engine.lock:
            return float(torch.stack([kl(ex) for ex in examples]).mean())

    with _frozen(engine.model):
        with torch.no_grad(), engine.lock:
            kl_unsteered = float(torch.stack([kl(ex, steer=False) for ex in examples]).mean())
        kl_diffmean = kl_all()
        mse_start = float(((h_s + norm * v.detach() - h_t) ** 2).sum(-1).mean() / norm**2)

        # 4. Stage 1: activation imitation at layer L (cached states, no forward pass).
        opt = torch.optim.Adam([v, w, b], lr=config.act_lr)
        for step in range(config.act_steps):
            a = gate_coefficients(h_s, w, b).unsqueeze(-1)
            loss = ((h_s + a * norm * v - h_t) ** 2).sum(-1).mean() / norm**2
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % 50 == 0 or step + 1 == config.act_steps:
                report(0.5 + 0.05 * (step + 1) / config.act_steps, f"activation imitation {loss.item():.3f}")
        mse_end = float(loss.detach()) if config.act_steps else mse_start
        kl_stage1 = kl_all()

        # 5. Stage 2: next-token imitation through the blocks above L.
        opt = torch.optim.Adam([v, w, b], lr=config.kl_lr)
        rng = np.random.default_rng(config.seed)
        for step in range(config.kl_steps):
            batch = rng.choice(len(examples), size=min(config.batch, len(examples)), replace=False)
            opt.zero_grad()
            with engine.lock:
                loss = torch.stack([kl(examples[j]) for j in batch]).mean()
                loss.backward()
            opt.step()
            report(0.55 + 0.45 * (step + 1) / config.kl_steps, f"next-token imitation {loss.item():.3f}")
        kl_trained = kl_all() if config.kl_steps else kl_stage1

    with torch.no_grad():
        mean = gate_coefficients(everywhere, w, b).mean().item()
        vec = (norm * v).detach().float().numpy().copy()
    losses = {"kl_unsteered": round(kl_unsteered, 4), "kl_diffmean": round(kl_diffmean, 4),
              "kl_activation_fit": round(kl_stage1, 4), "kl_trained": round(kl_trained, 4),
              "mse_diffmean": round(mse_start, 4), "mse_fit": round(mse_end, 4)}
    return PSRVector(instruction, layer, vec, w.detach().numpy().copy(), b.item(), mean,
                     mean * float(np.linalg.norm(vec)) / norm, losses, [t for _, _, t in texts], config,
                     time.monotonic() - t0)


def _chat_request(messages: list[dict]) -> Any:
    from ..engines.base import GenerationRequest

    return GenerationRequest(messages=messages)


def _write(writer: Any, prefixes: list[tuple[str, str]], config: PSRConfig,
           progress: Callable[[float], None]) -> list[tuple[str, str, str]]:
    """(teacher prefix, student prefix, continuation): the writer continues each teacher prefix."""
    from ..engines.base import GenerationRequest, SamplingParams

    out = []
    for i, (teacher, student) in enumerate(prefixes):
        params = SamplingParams(max_tokens=config.max_tokens, min_tokens=config.max_tokens // 2,
                                temperature=config.temperature, top_p=0.95, seed=config.seed * 1000 + i,
                                repetition_penalty=1.1)
        text = writer.generate(GenerationRequest(prompt=teacher, params=params)).text
        if text.strip():
            out.append((teacher, student, text))
        progress((i + 1) / config.n_texts)
    if len(out) < 2:
        raise InvalidSteering("the model wrote fewer than 2 texts for this instruction", param="instruction")
    return out


def _read(engine: Any, teacher: str, student: str, text: str, layer: int, top_k: int) -> _Example:
    """Run teacher and student over their prefix + the shared continuation (no gradients)."""
    import torch

    cont = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids_t, ids_s = engine.tokenize(teacher) + cont, engine.tokenize(student) + cont
    n = len(cont)
    rows_t = torch.arange(len(ids_t) - n - 1, len(ids_t) - 1)
    rows_s = torch.arange(len(ids_s) - n - 1, len(ids_s) - 1)
    blocks = engine.model.model.layers
    with torch.no_grad(), engine.lock:
        captured: dict[str, Any] = {}
        hook = blocks[layer].register_forward_hook(
            lambda m, a, out: captured.__setitem__("h", (out[0] if isinstance(out, tuple) else out).detach()))
        try:
            hidden = engine.model.model(input_ids=torch.tensor([ids_t]), use_cache=False).last_hidden_state
            logp = torch.log_softmax(engine.model.lm_head(hidden[0, rows_t]).float(), -1)
            h_teacher = captured["h"][0, rows_t]
            top_logp, top_ids = logp.topk(top_k, -1)
            if layer + 1 < len(blocks):
                pre = blocks[layer + 1].register_forward_pre_hook(
                    lambda m, a, kw: captured.__setitem__("kwargs", dict(kw)), with_kwargs=True)
            try:
                engine.model.model(input_ids=torch.tensor([ids_s]), use_cache=False)
            finally:
                if layer + 1 < len(blocks):
                    pre.remove()
        finally:
            hook.remove()
    rest = (1 - top_logp.exp().sum(-1)).clamp_min(1e-9).log()
    return _Example(captured["h"], captured.get("kwargs", {}), rows_s, h_teacher, top_ids, top_logp, rest)


def _kl(engine: Any, h: Any, ex: _Example, layer: int) -> Any:
    """KL(teacher || student) per continuation token, the student replayed from layer ``layer``'s
    (steered) states ``h`` through the blocks above it: the mean over positions."""
    import torch

    for block in engine.model.model.layers[layer + 1:]:
        out = block(h, **ex.kwargs)
        h = out[0] if isinstance(out, tuple) else out
    logp = torch.log_softmax(engine.model.lm_head(engine.model.model.norm(h)[0, ex.rows]).float(), -1)
    top = logp.gather(-1, ex.top_ids)
    rest = (1 - top.exp().sum(-1)).clamp_min(1e-9).log()
    p_top, p_rest = ex.top_logp.exp(), ex.rest_logp.exp()
    return ((p_top * (ex.top_logp - top)).sum(-1) + p_rest * (ex.rest_logp - rest)).mean()


class _frozen:
    """No gradients for the model's own weights while training (only v, w, b learn)."""

    def __init__(self, model: Any) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: Any) -> None:
        for p in self.params:
            p.requires_grad_(True)


def _print_progress(fraction: float, message: str) -> None:
    print(f"\r[tinymorph] PSR {fraction:5.1%} {message:<40}", end="" if fraction < 1 else "\n",
          file=sys.stderr, flush=True)

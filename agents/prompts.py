"""Per-task prompts and what each task does to the document.

The tasks come from the product seeds: continue at the cursor, rewrite a selection, margin notes
(inlay hints anchored to a range), telescopic text (expand / contract), inline definitions.
Continuing is a raw completion of the text before the cursor (a small model continues prose far
better than it follows "please continue"); the others are chat instructions under the persona's
system prompt.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .exceptions import InvalidTask

__all__ = ["Task", "Mode", "Edit", "build_request", "CONTEXT_CHARS", "RunSampling", "RUN_SAMPLING"]

CONTEXT_CHARS = 1500


class Task(StrEnum):
    CONTINUE = "continue"
    REWRITE = "rewrite"
    MARGIN_NOTE = "margin_note"
    EXPAND = "expand"
    CONTRACT = "contract"
    DEFINE = "define"

    @classmethod
    def parse(cls, value: Any) -> "Task":
        if value == "margin_notes":  # the agent panel's spelling
            value = "margin_note"
        try:
            return cls(value)
        except ValueError:
            raise InvalidTask(f"task must be one of {', '.join(t.value for t in cls)}, not {value!r}") from None

    @property
    def needs_range(self) -> bool:
        return self is not Task.CONTINUE

    @property
    def edit(self) -> "Edit":
        if self is Task.CONTINUE:
            return Edit.INSERT
        if self is Task.MARGIN_NOTE:
            return Edit.NOTE
        if self is Task.DEFINE:
            return Edit.APPEND  # direct: a parenthesis after the term; suggest: a note
        return Edit.REPLACE

    @property
    def default_max_tokens(self) -> int:
        return {Task.CONTINUE: 48, Task.REWRITE: 96, Task.MARGIN_NOTE: 48, Task.EXPAND: 96,
                Task.CONTRACT: 64, Task.DEFINE: 40}[self]

    @property
    def min_share(self) -> float:
        """The part of the asked-for length written before the model may stop: a raw completion
        often ends after three words ("He had no idea."), which is no continuation at all, and an
        expansion shorter than half its budget is no expansion."""
        return 0.5 if self in (Task.CONTINUE, Task.EXPAND) else 0.0


class Mode(StrEnum):
    DIRECT = "direct"
    SUGGEST = "suggest"

    @classmethod
    def parse(cls, value: Any) -> "Mode":
        try:
            return cls(value or "suggest")
        except ValueError:
            raise InvalidTask(f"mode must be 'direct' or 'suggest', not {value!r}") from None


class Edit(StrEnum):
    """What the generated text does to the document in direct mode."""
    INSERT = "insert"  # at the anchor
    REPLACE = "replace"  # the range
    APPEND = "append"  # right after the range
    NOTE = "note"  # nothing: a note in the suggestions map, in either mode


_INSTRUCTIONS = {
    Task.REWRITE: "Rewrite the following text, keeping its meaning. Reply with the rewritten text only.",
    Task.EXPAND: "Expand the following text: say the same thing with more detail, in a few sentences. "
                 "Reply with the expanded text only.",
    Task.CONTRACT: "Say the following text in fewer words. Reply with the shorter text only.",
    Task.MARGIN_NOTE: "You are reviewing a draft. Write one short margin note (a question or a suggestion) "
                      "about this passage.",
}


@dataclass(frozen=True)
class Prompt:
    """Frozen in the run's row on first use, so a redelivered attempt generates from the same input
    even after the first attempt changed the document."""
    prompt: str | None
    messages: list[dict] | None
    max_tokens: int
    temperature: float
    seed: int
    min_tokens: int = 0

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "messages": self.messages, "max_tokens": self.max_tokens,
                "min_tokens": self.min_tokens, "temperature": self.temperature, "seed": self.seed}


def build_prompt(task: Task, persona_prompt: str, before: str, selected: str, options: dict, run_id: str) -> Prompt:
    max_tokens = int(options.get("max_tokens") or task.default_max_tokens)
    min_tokens = min(int(options.get("min_tokens", task.min_share * max_tokens)), max_tokens)
    temperature = float(options.get("temperature", 0.7))
    # options.seed makes a run's sampling reproducible; without it each run draws its own (and a
    # redelivered attempt the same one: the prompt, seed included, is frozen on first use)
    seed = int(options["seed"]) if options.get("seed") is not None else zlib.crc32(run_id.encode())
    system = [{"role": "system", "content": persona_prompt}] if persona_prompt else []
    if task is Task.CONTINUE:
        context = before[-CONTEXT_CHARS:]
        if context.strip():
            return Prompt(context, None, max_tokens, temperature, seed, min_tokens)
        return Prompt(None, system + [{"role": "user", "content": "Write the opening sentence of a short essay."}],
                      max_tokens, temperature, seed, min_tokens)
    if task is Task.DEFINE:
        sentence = before[-300:].rsplit(".", 1)[-1] + selected
        user = f'Define the term "{selected.strip()}" in one short sentence, as it is used here: "{sentence.strip()}"'
    else:
        user = f"{_INSTRUCTIONS[task]}\n\n{selected}"
    return Prompt(None, system + [{"role": "user", "content": user}], max_tokens, temperature, seed, min_tokens)


@dataclass(frozen=True)
class RunSampling:
    """How runs sample. Plain temperature sampling loops on a small model ("She had seen the
    sea, and she had seen the sun. She had seen the stars, and she had seen the sea."): DRY
    penalises exactly the token that would extend a repeat (of the recent document too, so it
    is not copied back), a light frequency penalty discourages leaning on one word, and min-p
    drops the unlikely tail that top-p alone lets through. ``tinymorph eval writing`` measures
    the effect."""
    temperature: float = 0.7
    top_p: float = 0.95
    min_p: float = 0.05
    frequency_penalty: float = 0.2
    dry_multiplier: float = 0.8
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    penalty_last_n: int = 256
    #: Tokens past the asked-for length a run may take to end its sentence (``participant._Cut``).
    grace_tokens: int = 32


RUN_SAMPLING = RunSampling()


def build_request(prompt: dict, steering: list[dict], sampling: RunSampling = RUN_SAMPLING):
    """The inference layer's ``GenerationRequest`` for a frozen prompt. The frozen prompt holds
    the budget (``max_tokens``); the request allows ``grace_tokens`` more to end a sentence."""
    from inference import GenerationRequest, SamplingParams, SteeringSpec

    budget = max(1, min(int(prompt["max_tokens"]), 512))
    params = SamplingParams(max_tokens=budget + sampling.grace_tokens,
                            min_tokens=min(int(prompt.get("min_tokens", 0)), budget),
                            temperature=prompt["temperature"], top_p=sampling.top_p, seed=prompt["seed"],
                            min_p=sampling.min_p, frequency_penalty=sampling.frequency_penalty,
                            dry_multiplier=sampling.dry_multiplier, dry_base=sampling.dry_base,
                            dry_allowed_length=sampling.dry_allowed_length, penalty_last_n=sampling.penalty_last_n)
    # (one paragraph at most, whole sentences: the participant's cut)
    spec = SteeringSpec.from_json(steering or None)
    if prompt.get("prompt") is not None:
        return GenerationRequest(prompt=prompt["prompt"], params=params, steering=spec)
    return GenerationRequest(messages=prompt["messages"], params=params, steering=spec)

"""Chat templates: render the model's own Jinja template (from the GGUF) the way HF does.

Both engines render through this one function, so a chat request becomes the same token ids on
llama.cpp and torch.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..exceptions import InvalidRequest

_ROLES = {"system", "user", "assistant", "tool", "developer"}


@lru_cache(maxsize=8)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise InvalidRequest(f"chat template: {message}", param="messages")

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render(template: str, messages: Sequence[dict], *, bos_token: str = "", eos_token: str = "",
           add_generation_prompt: bool = True) -> str:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise InvalidRequest(f"messages[{i}] needs a role in {sorted(_ROLES)}", param="messages")
        content = m.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise InvalidRequest(f"messages[{i}].content must be a string", param="messages")
        clean.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    return _compile(template).render(messages=clean, bos_token=bos_token, eos_token=eos_token,
                                     add_generation_prompt=add_generation_prompt)

"""Logging that never writes a token: uvicorn's access log prints each request's path with its
query, and ``?token=`` is how browsers' websockets (and share links) carry one."""

from __future__ import annotations

import logging
import re

__all__ = ["redact_tokens", "TokenRedactor"]

_TOKEN = re.compile(r"((?:^|[?&])token=)[^&\s\"]+")


class TokenRedactor(logging.Filter):
    """Replaces the value of every ``token=`` query parameter in a record's message arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _TOKEN.sub(r"\1[redacted]", record.msg)
        return True


def redact_tokens() -> None:
    """Install the redactor on uvicorn's access and error loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactor) for f in logger.filters):
            logger.addFilter(TokenRedactor())

"""What the inference layer needs from whoever runs it: a data dir, a database, workspace texts.

The inference layer is a leaf: it never reads the hub's settings or tables. The hub (or the
``tinymorph inference`` CLI, or a test) builds an ``InferenceConfig`` and hands it to
``Inference``; ``InferenceConfig.from_env()`` is the standalone default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["InferenceConfig", "DocumentSource", "default_data_dir"]

#: Yields ``(doc id, text)`` for the workspace's documents: what SAEs are trained on besides the
#: model's own writing. A text may be a whole document; the corpus builder splits paragraphs.
DocumentSource = Callable[[], Iterable[tuple[str, str]]]


def default_data_dir() -> Path:
    """``$TINYMORPH_DATA_DIR``, else ``$XDG_DATA_HOME/tinymorph``, else ``~/.local/share/tinymorph``
    (the hub's rule, so both find the same models, caches and database)."""
    override = os.environ.get("TINYMORPH_DATA_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tinymorph"


@dataclass(frozen=True)
class InferenceConfig:
    #: Converted models, norms, SAEs, corpora and control-vector files live under here.
    data_dir: Path
    #: SQLAlchemy URL of the database holding the vector library and the SAE catalog; empty means
    #: SQLite at ``<data_dir>/tinymorph.db`` (the hub's default database).
    database_url: str = ""
    #: The workspace texts SAEs are trained on; None: only the model's own writing.
    documents: DocumentSource | None = field(default=None, compare=False, repr=False)
    #: Largest ``/v1`` request body read (413 past it): bodies are parsed whole, and an embeddings
    #: ``input`` list is as long as its body. The hub passes its own ``max_body_bytes``.
    max_body_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if isinstance(self.max_body_bytes, bool) or not isinstance(self.max_body_bytes, int) \
                or self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be a positive integer, not {self.max_body_bytes!r}")
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'tinymorph.db'}")

    @classmethod
    def from_env(cls) -> "InferenceConfig":
        """The data dir by the hub's rule, ``$TINYMORPH_DB`` (default SQLite in the data dir) and
        ``$TINYMORPH_MAX_BODY_BYTES``."""
        limit = os.environ.get("TINYMORPH_MAX_BODY_BYTES", "")
        return cls(data_dir=default_data_dir(), database_url=os.environ.get("TINYMORPH_DB", ""),
                   **({"max_body_bytes": int(limit)} if limit else {}))

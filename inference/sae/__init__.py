"""SAEs on the residual stream: SAELens folders as steering directions (``saelens``), the catalog
of trained SAEs (``catalog``), the text they learn from (``corpus``).

The torch-heavy parts are imported by name when needed, never by this package: ``train``
(sae-lens training), ``eval`` (L0, FVU, CE recovered), ``explain`` (feature index, labels,
self-explanation), ``decompose`` (a CAA vector as features); ``api`` holds the ``/api/sae`` routes and
``cli`` the ``tinymorph sae`` commands and ``tinymorph eval steering`` (``steering/axbench.py``).
"""

from .catalog import SAECatalog
from .corpus import (WRITING_PROMPTS, Corpus, build_corpus, heldout_texts, load_corpus, paragraphs, save_corpus,
                     self_written)
from .saelens import SAE, FeatureInfo, SAERegistry

__all__ = [
    "SAE", "FeatureInfo", "SAERegistry", "SAECatalog",
    "WRITING_PROMPTS", "Corpus", "build_corpus", "heldout_texts", "load_corpus", "paragraphs", "save_corpus",
    "self_written",
]

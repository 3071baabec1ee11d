"""Measured strengths for SAE features (issue 16, requirement 2): the fluency ladder that
calibrates built vectors (``steering/calibration.py``), with the feature itself as the concept
score: how strongly it fires, per token, on the continuations (read back by the torch model at
the SAE's layer). Steering toward a feature should make the text the feature describes, and the
feature is the most direct judge of that.

The result is stored beside the SAE (``SAERegistry.save_feature_guide``) and served wherever the
feature's strength is: ``/api/sae/features``, its card, and a steering term that omits
``strength``. Features not calibrated yet keep the guide from their typical activation, and say
so in ``strength_basis``. Run with ``tinymorph sae calibrate SAE_ID FEATURE...``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..steering.calibration import CalibrationConfig, StrengthPoint, calibrate
from ..steering.strengths import StrengthGuide

__all__ = ["calibrate_feature", "feature_concept"]


def feature_concept(inf: Any, sae_id: str, feature: int) -> Callable[[list[str]], float]:
    """Mean activation of ``feature`` per token over texts (first token skipped: its norm is an
    outlier every SAE misreads)."""
    sae = inf.saes.get(sae_id)
    sae.direction(feature)  # validates the index
    engine = inf.torch_engine()

    def score(texts: list[str]) -> float:
        per_text = []
        for acts in engine.residuals(texts, [sae.layer]):
            h = acts[sae.layer][1:]
            per_text.append(float(sae.encode(h)[:, feature].mean()) if len(h) else 0.0)
        return float(np.mean(per_text)) if per_text else 0.0

    return score


def calibrate_feature(inf: Any, sae_id: str, feature: int, cfg: CalibrationConfig = CalibrationConfig(),
                      progress: Callable[[float], None] | None = None) -> tuple[StrengthGuide, list[StrengthPoint]]:
    """Climb the ladder for ``sae:SAE_ID#FEATURE`` with the default engine (it generates; its
    unsteered NLL is the fluency measure) and store the guide with the SAE."""
    concept = feature_concept(inf, sae_id, feature)
    guide, points = calibrate(inf.engine(), {"source": f"sae:{sae_id}#{feature}"}, concept, cfg, progress)
    inf.saes.save_feature_guide(sae_id, feature, inf.torch_engine().info, guide, [p.to_json() for p in points])
    return guide, points

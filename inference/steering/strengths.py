"""Recommended steering strengths: the one place the API, the personas and the agent panel take
them from (the panel draws its band and its "outside the recommended range" warning from the
``recommended`` and ``default_strength`` fields the backend serves with every term).

Strengths are in typical residual norms at the layer (``spec.py``). A vector whose strength was
measured (``calibration.py``) carries its result in its provenance (``stored_guide``); the shipped
CAA vectors' results are ``CAA_GUIDES``. An SAE feature measured by ``sae/calibrate.py`` has its
guide stored with the SAE (``SAERegistry.feature_guide``); until then it follows its typical
activation (``sae_guide``). This module imports nothing else of ours: the spec asks it for defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StrengthGuide", "CAA_GUIDE", "CAA_GUIDES", "guide_for", "sae_guide", "stored_guide"]


@dataclass(frozen=True)
class StrengthGuide:
    default: float
    low: float
    high: float
    #: Where the numbers come from, said to whoever reads the API.
    basis: str

    def to_json(self) -> dict:
        return {"default_strength": self.default, "recommended": [self.low, self.high], "strength_basis": self.basis}

    @classmethod
    def from_json(cls, d: dict) -> "StrengthGuide":
        low, high = d["recommended"]
        return cls(float(d["default_strength"]), float(low), float(high), str(d.get("strength_basis", "")))


_MEASURED = ("tinymorph eval writing on SmolLM2-135M (12 openings): the largest strength whose continuations "
             "stay within 0.5 nats/token of the unsteered NLL without turning degenerate or off topic")

#: The shipped CAA vectors, measured (module docstring). At 0.3-0.4 a third to a half of the
#: steered continuations were degenerate or off topic; ``concise`` already degrades at 0.2.
CAA_GUIDES: dict[str, StrengthGuide] = {
    "concise": StrengthGuide(0.1, 0.05, 0.1, _MEASURED),
    "formal": StrengthGuide(0.2, 0.05, 0.2, _MEASURED),
    "joyful": StrengthGuide(0.2, 0.05, 0.2, _MEASURED),
}
#: A vector whose calibration has not run (yet): the shipped vectors' common ground.
CAA_GUIDE = StrengthGuide(0.1, 0.05, 0.2, "not measured for this vector: the range the shipped CAA vectors share")


def sae_guide(typical_strength: float) -> StrengthGuide:
    """An uncalibrated feature's guide: one to two times its typical maximum activation; for a
    feature that does not fire on the reference prose (no typical activation), the range built
    vectors share rather than a strength of 0 that would steer nothing."""
    t = round(float(typical_strength), 3)
    if t <= 0:
        return StrengthGuide(CAA_GUIDE.default, CAA_GUIDE.low, CAA_GUIDE.high,
                             "not calibrated, and the feature does not fire on the reference prose: the range "
                             "built vectors share (tinymorph sae calibrate measures its own)")
    return StrengthGuide(t, t, round(2 * t, 3), "not calibrated: the feature's typical maximum activation, one to "
                                                "two times (tinymorph sae calibrate measures it)")


def guide_for(source: str) -> StrengthGuide | None:
    """The guide for a steering source string known without the database (``caa:NAME`` of a
    shipped vector, else the unmeasured CAA guide; None where nothing is known without loading
    a model: SAE features are answered by ``/api/sae/features``, GGUF and inline vectors carry no
    measurement). A built vector's own calibration: ``stored_guide``."""
    kind, _, name = source.partition(":")
    return CAA_GUIDES.get(name, CAA_GUIDE) if kind == "caa" else None


def stored_guide(source: str, provenance: dict | None) -> StrengthGuide | None:
    """A stored vector's measured guide (``provenance["strength"]``, written by calibration),
    else what ``guide_for`` knows."""
    measured = (provenance or {}).get("strength")
    if isinstance(measured, dict) and "default_strength" in measured and "recommended" in measured:
        return StrengthGuide.from_json(measured)
    return guide_for(source)

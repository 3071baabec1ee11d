"""Calibrated steering strengths: a ``caa:`` term without ``strength`` steers at its measured
default, the shipped personas use those defaults, and hubs that shipped the old ones upgrade."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from agents_support import migrated_store

from agents.models import AgentRow
from agents.personas import SHIPPED, PersonaStore, normalize_steering
from inference.exceptions import InvalidSteering
from inference.steering import CAA_GUIDE, CAA_GUIDES, ModelInfo, SteeringSpec, StrengthGuide, guide_for, resolve
from inference.steering.calibration import (CalibrationConfig, StrengthPoint, guide_from_points, pair_concept,
                                            repeated_trigrams, repeats_more, trigram_rise)
from inference.steering.strengths import stored_guide


def test_an_omitted_strength_is_the_calibrated_default():
    spec = SteeringSpec.from_json([{"source": "caa:joyful"}, {"source": "caa:my-own"}, {"source": "caa:formal",
                                                                                        "strength": -0.05}])
    # a shipped vector's default is known here; a built one's is its calibration, read at resolve time
    assert [t.strength for t in spec.terms] == [CAA_GUIDES["joyful"].default, None, -0.05]
    assert "strength" not in spec.terms[1].to_json()
    assert normalize_steering([{"kind": "vector", "id": "concise"}])[0]["strength"] == CAA_GUIDES["concise"].default
    assert guide_for("gguf:x.gguf") is None and guide_for("sae:s#1") is None


def test_shipped_personas_are_calibrated_and_inside_their_range():
    for p in SHIPPED:
        for term in p.steering:
            g = guide_for(term["source"])
            assert term["strength"] == g.default and g.low <= g.default <= g.high, p.id
        for term in p.to_json()["steering"]:
            assert term["recommended"] == [guide_for(term["source"]).low, guide_for(term["source"]).high]


def test_old_shipped_strengths_are_upgraded_but_edits_are_kept(tmp_path):
    store = migrated_store(tmp_path / "agents.db")
    personas = PersonaStore(store.engine)
    personas.ensure_shipped()
    with store.engine.begin() as conn:  # as an earlier version shipped them, and one edited by the operator
        conn.execute(sa.update(AgentRow).where(AgentRow.id == "muse").values(
            steering=[{"source": "caa:joyful", "strength": 0.4, "method": "add", "scope": "all"}]))
        conn.execute(sa.update(AgentRow).where(AgentRow.id == "scribe").values(
            steering=[{"source": "caa:formal", "strength": 0.15, "method": "add", "scope": "all"}]))
    personas.ensure_shipped()
    assert personas.get("muse").steering == next(p for p in SHIPPED if p.id == "muse").steering
    assert personas.get("scribe").steering[0]["strength"] == 0.15
    store.close()


class _Library:
    """A DirectionProvider with one built vector, calibrated at 0.3 (``mine``), and one not (``raw``)."""

    def caa_vectors(self, name, model):
        return {2: np.ones(model.d_model, np.float32)}

    def caa_default_strength(self, name, model):
        return stored_guide(f"caa:{name}", {"strength": StrengthGuide(0.3, 0.1, 0.3, "calibrated").to_json()}
                            if name == "mine" else None).default


def test_a_built_vectors_omitted_strength_is_its_stored_calibration():
    model = ModelInfo(key="m", n_layers=4, d_model=8, layer_norms=(1.0, 2.0, 4.0, 8.0))
    spec = SteeringSpec.from_json([{"source": "caa:mine"}, {"source": "caa:raw"}, {"source": "caa:mine", "strength": 0.5}])
    scales = [iv.scale for iv in resolve(spec, model, _Library()).interventions]
    assert scales == pytest.approx([0.3 * 4.0, CAA_GUIDE.default * 4.0, 0.5 * 4.0])


def test_repeated_trigrams_counts_repeats_only():
    assert repeated_trigrams("one two") == 0.0
    assert repeated_trigrams("a b c d e") == 0.0
    assert repeated_trigrams("a b c a b c") == pytest.approx(1 / 4)  # 4 trigrams, "a b c" once again


def _point(s, dnll, concept, fluent=True, rises=True):
    return StrengthPoint(s, 3.0 + dnll, dnll, 0.0, concept, fluent, rises)


def test_the_guide_is_the_largest_fluent_strength_whose_concept_rose():
    points = [_point(0, 0, 0.0, rises=False), _point(0.1, 0.1, 0.05), _point(0.2, 0.3, 0.1),
              _point(0.3, 0.7, 0.2, fluent=False)]
    guide = guide_from_points(points)
    assert (guide.default, guide.low, guide.high) == (0.2, 0.1, 0.2)
    assert guide.basis.startswith("calibrated")
    # nothing raised the concept score: the gentlest strength tried, and the basis says so
    flat = guide_from_points([_point(0, 0, 0.0, rises=False), _point(0.1, 0.1, 0.0, rises=False)])
    assert flat.default == 0.1 and "no strength raised" in flat.basis
    # the gentlest strength already broke the budget: the basis says which limit, with its figures
    broke = guide_from_points([_point(0, 0, 0.0, rises=False),
                               StrengthPoint(0.05, 3.05, 0.05, 0.096, 0.1, False, True)])
    assert broke.default == 0.05 and "already broke the fluency budget" in broke.basis
    assert "0.000 -> 0.096" in broke.basis and "standard errors" in broke.basis


def test_the_pair_concept_score_prefers_the_positive_side():
    axis = {"warm": np.array([1.0, 0.0]), "cold": np.array([0.0, 1.0])}
    embed = lambda texts: np.array([axis["warm"] if "sun" in t else axis["cold"] for t in texts])  # noqa: E731
    score = pair_concept(embed, [("sun", "snow"), ("sunny day", "ice")])
    assert score(["sun again"]) == pytest.approx(1.0) and score(["snow again"]) == pytest.approx(-1.0)


def test_the_calibration_ladder_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TINYMORPH_CALIBRATION", '{"strengths": [0.1, 0.2], "seeds": [0]}')
    cfg = CalibrationConfig.from_env()
    assert cfg.strengths == (0.1, 0.2) and cfg.seeds == (0,) and cfg.max_delta_nll == 0.5
    monkeypatch.setenv("TINYMORPH_CALIBRATION", '{"ladder": [1]}')
    with pytest.raises(InvalidSteering, match="ladder"):
        CalibrationConfig.from_env()


def test_the_panel_gets_a_built_vectors_own_guide(tmp_path):
    """A persona steering with a vector built here shows the range its calibration measured (the
    one an omitted strength resolves to), a PSR vector its trained strength; shipped ones theirs."""
    from inference.steering import VectorLibrary

    from agents.personas import steering_for_ui, stored_guides

    lib = VectorLibrary(f"sqlite:///{tmp_path / 'v.db'}")
    measured = StrengthGuide(0.3, 0.1, 0.3, "calibrated: test")
    lib.put("mine", "m", {2: np.ones(8, np.float32)}, "caa", {"strength": measured.to_json()})
    lib.put("raw", "m", {2: np.ones(8, np.float32)}, "caa", {})
    lib.put("winter", "m", {2: np.ones(8, np.float32)}, "psr", {"strength_trained": 0.8})
    spec = [{"source": s} for s in ("caa:mine", "caa:raw", "psr:winter", "caa:joyful", "sae:x#1")]
    guides = stored_guides([spec], lib.db)
    assert set(guides) == {"caa:mine", "caa:raw", "psr:winter"}
    ui = {t["source"]: t for t in steering_for_ui(spec, guides)}
    assert (ui["caa:mine"]["default_strength"], ui["caa:mine"]["recommended"]) == (0.3, [0.1, 0.3])
    assert ui["caa:raw"]["default_strength"] == CAA_GUIDE.default
    assert ui["psr:winter"]["default_strength"] == 0.8 and ui["psr:winter"]["kind"] == "psr"
    assert ui["caa:joyful"]["default_strength"] == CAA_GUIDES["joyful"].default
    assert "default_strength" not in ui["sae:x#1"]


def test_a_trigram_rise_counts_when_it_is_larger_than_its_noise():
    """Paired by opening and seed: a steady rise counts, one sample's loop among calm ones does
    not (the fixed slack alone stopped ladders on that), and neither does a rise within the slack."""
    cfg = CalibrationConfig()
    base = [0.0, 0.05, 0.0, 0.1, 0.0, 0.02] * 4
    steady = [b + 0.05 for b in base]
    rise, se = trigram_rise(base, steady)
    assert rise == pytest.approx(0.05) and se == pytest.approx(0.0, abs=1e-12)
    assert repeats_more(rise, se, cfg)
    one_loop = list(base)
    one_loop[3] += 0.9  # one continuation fell into a loop: a mean rise of 0.0375, but noise
    assert trigram_rise(base, one_loop)[0] > cfg.trigram_slack and not repeats_more(*trigram_rise(base, one_loop), cfg)
    assert not repeats_more(*trigram_rise(base, [b + 0.01 for b in base]), cfg)  # within the slack
    with pytest.raises(ValueError):
        trigram_rise(base, steady[:-1])

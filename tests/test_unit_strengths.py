"""Calibrated steering strengths: a ``caa:`` term without ``strength`` steers at its measured
default, the shipped personas use those defaults, and hubs that shipped the old ones upgrade."""

from __future__ import annotations

import sqlalchemy as sa
from agents_support import migrated_store

from agents.models import AgentRow
from agents.personas import SHIPPED, PersonaStore, normalize_steering
from inference.steering import CAA_GUIDE, CAA_GUIDES, SteeringSpec, guide_for


def test_an_omitted_strength_is_the_calibrated_default():
    spec = SteeringSpec.from_json([{"source": "caa:joyful"}, {"source": "caa:my-own"}, {"source": "caa:formal",
                                                                                        "strength": -0.05}])
    assert [t.strength for t in spec.terms] == [CAA_GUIDES["joyful"].default, CAA_GUIDE.default, -0.05]
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

"""Personas: named agents with a default prompt, model and steering spec, kept in the database.

The steering is stored in the inference layer's spec form (``[{source, strength, ...}]``). The
browser speaks ``[{kind, id, strength}]`` (``kind`` ``vector`` = a CAA vector, ``psr`` = a PSR
vector, ``feature`` = an SAE feature ``SAE_ID#N``); :func:`normalize_steering` accepts both, and personas are served with
both spellings on every term so the agent panel can show and send them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from collab.models import utcnow

from .exceptions import InvalidPersona, InvalidSteeringSpec, PersonaReadOnly, UnknownAgent
from .models import AgentRow

__all__ = ["Persona", "PersonaStore", "SHIPPED", "normalize_steering", "steering_for_ui", "stored_guides"]

_SPEC_FIELDS = {"source", "vector", "layer", "layers", "strength", "method", "scope", "apply_to"}
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def normalize_steering(raw: Any) -> list[dict]:
    """Validate steering terms in either spelling; returns the spec JSON (``SteeringSpec.to_json``)."""
    from inference.exceptions import InvalidSteering
    from inference.steering import SteeringSpec

    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidSteeringSpec("steering must be a list of terms")
    terms = []
    for i, term in enumerate(raw):
        if not isinstance(term, dict):
            raise InvalidSteeringSpec(f"steering[{i}] must be an object")
        if "source" in term or "vector" in term:
            terms.append({k: v for k, v in term.items() if k in _SPEC_FIELDS})
            continue
        kind, ident = term.get("kind", "vector"), term.get("id")
        if not isinstance(ident, str) or not ident:
            raise InvalidSteeringSpec(f"steering[{i}] needs 'source' or 'kind' and 'id'")
        if kind in ("vector", "caa"):
            source = f"caa:{ident}"
        elif kind in ("feature", "sae"):
            source = f"sae:{ident}"
        elif kind == "psr":
            source = f"psr:{ident}"
        else:
            raise InvalidSteeringSpec(f"steering[{i}].kind must be 'vector', 'psr' or 'feature', not {kind!r}")
        terms.append({"source": source,  # no strength: the source's calibrated default (inference)
                      **{k: v for k, v in term.items() if k in _SPEC_FIELDS - {"source"}}})
    try:
        spec = SteeringSpec.from_json(terms)
    except InvalidSteering as exc:
        raise InvalidSteeringSpec(exc.message) from None
    return spec.to_json()


def check_known_vectors(spec: list[dict], database_url: str) -> None:
    """Refuse CAA names that are neither shipped nor in the vector library (a typo would
    otherwise only fail inside the worker)."""
    from inference.models import steering_vectors
    from inference.steering import shipped_vectors

    names = {t["source"][4:] for t in spec if t["source"].startswith("caa:")}
    if not names:
        return
    known = set(shipped_vectors())
    missing = names - known
    if missing:
        engine = sa.create_engine(database_url)
        try:
            with engine.connect() as conn:
                if sa.inspect(conn).has_table(steering_vectors.name):
                    rows = conn.execute(sa.select(steering_vectors.c.name).where(
                        steering_vectors.c.name.in_(missing))).scalars().all()
                    missing -= set(rows)
        finally:
            engine.dispose()
    if missing:
        raise InvalidSteeringSpec(f"unknown steering vector(s): {', '.join(sorted(missing))}; "
                                  f"shipped: {', '.join(sorted(known))}")


def stored_guides(specs: list[list[dict]], engine: Engine) -> dict[str, Any]:
    """``{source: StrengthGuide}`` for the built vectors these specs name (``caa:``/``psr:`` not
    shipped): what their calibration measured (their provenance's ``strength``), or for a PSR
    vector never calibrated the strength its training arrived at. The panel then shows the
    range the backend resolves an omitted strength to (``VectorLibrary``), not a general one."""
    from inference.models import steering_vectors
    from inference.steering import CAA_GUIDES, StrengthGuide
    from inference.steering.strengths import stored_guide

    wanted = {t["source"] for spec in specs for t in spec
              if t.get("source", "").startswith(("caa:", "psr:")) and t["source"][4:] not in CAA_GUIDES}
    if not wanted:
        return {}
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(steering_vectors.name):
            return {}
        rows = conn.execute(sa.select(steering_vectors.c.name, steering_vectors.c.kind, steering_vectors.c.provenance)
                            .where(steering_vectors.c.name.in_({s[4:] for s in wanted}))).all()
    out: dict[str, Any] = {}
    for name, kind, provenance in rows:
        source = f"{'psr' if kind == 'psr' else 'caa'}:{name}"
        if source not in wanted or source in out:
            continue
        provenance = provenance or {}
        if kind == "psr" and not isinstance(provenance.get("strength"), dict):
            trained = float(provenance.get("strength_trained", 1.0))
            out[source] = StrengthGuide(trained, trained / 2, trained, "the strength PSR training arrived at")
        else:
            out[source] = stored_guide(source, provenance)
    return out


def steering_for_ui(spec: list[dict], guides: dict[str, Any] | None = None) -> list[dict]:
    """Each term in both spellings: the spec fields plus ``kind``, ``id`` and ``label``, and the
    recommended range and default strength where the inference layer knows them (the agent
    panel's sliders take theirs from here, nowhere else). ``guides``: built vectors' own
    (``stored_guides``)."""
    from inference.steering import guide_for

    out = []
    for term in spec:
        source = term.get("source", "inline")
        kind, _, ident = source.partition(":")
        ui_kind = {"caa": "vector", "sae": "feature"}.get(kind, kind)
        guide = (guides or {}).get(source) or guide_for(source)
        out.append({**term, "kind": ui_kind, "id": ident or source, "label": ident or source,
                    **(guide.to_json() if guide else {})})
    return out


@dataclass
class Persona:
    id: str
    name: str
    model: str = ""
    prompt: str = ""
    steering: list[dict] = field(default_factory=list)
    color: str = "#0f766e"
    #: Who may change it (a user id); None: shipped, changed only by the operator.
    owner_id: str | None = None

    def to_json(self, guides: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "model": self.model, "prompt": self.prompt,
                "steering": steering_for_ui(self.steering, guides), "color": self.color, "owner_id": self.owner_id}

    @classmethod
    def from_row(cls, row: Any) -> "Persona":
        return cls(row.id, row.name, row.model, row.prompt, list(row.steering or []), row.color, row.owner_id)


def _calibrated(vector: str) -> list[dict]:
    """A shipped persona's steering at the vector's measured default strength (inference's
    ``steering/strengths.py``, measured with ``tinymorph eval writing``)."""
    from inference.steering import CAA_GUIDES

    return [{"source": f"caa:{vector}", "strength": CAA_GUIDES[vector].default, "method": "add", "scope": "all"}]


#: The agents every hub starts with (added when missing; edits through the API are kept).
SHIPPED = [
    Persona("editor", "Editor", prompt="You are a careful editor. Be brief and concrete.",
            steering=_calibrated("concise"), color="#0f766e"),
    Persona("scribe", "Scribe", prompt="You write in a formal, precise register.",
            steering=_calibrated("formal"), color="#7c3aed"),
    Persona("muse", "Muse", prompt="You are an upbeat creative writing partner.",
            steering=_calibrated("joyful"), color="#db2777"),
    Persona("plain", "Plain", prompt="You are a helpful writing assistant.", steering=[], color="#475569"),
]

#: Strengths earlier versions shipped (half the steered runs came out degenerate or off topic): a
#: shipped persona still holding exactly these is moved to the calibrated ones at startup.
_UNCALIBRATED = {"editor": ("caa:concise", 0.3), "scribe": ("caa:formal", 0.4), "muse": ("caa:joyful", 0.4)}


class PersonaStore:
    def __init__(self, engine: Engine, database_url: str = "") -> None:
        self.engine = engine
        self.database_url = database_url or str(engine.url)

    def ensure_shipped(self) -> None:
        with self.engine.begin() as conn:
            have = {r.id: r for r in conn.execute(sa.select(AgentRow.id, AgentRow.steering, AgentRow.owner_id))}
            rows = [self._row(p) for p in SHIPPED if p.id not in have]
            if rows:
                conn.execute(sa.insert(AgentRow), rows)
            for p in SHIPPED:
                row = have.get(p.id)
                old = _UNCALIBRATED.get(p.id)
                terms = list(row.steering or []) if row is not None else []
                if old and row is not None and row.owner_id is None and len(terms) == 1 \
                        and (terms[0].get("source"), terms[0].get("strength")) == old:
                    conn.execute(sa.update(AgentRow).where(AgentRow.id == p.id)
                                 .values(steering=p.steering, updated_at=utcnow()))

    @staticmethod
    def _row(p: Persona) -> dict[str, Any]:
        now = utcnow()
        return {"id": p.id, "name": p.name, "model": p.model, "prompt": p.prompt, "steering": p.steering,
                "color": p.color, "owner_id": p.owner_id, "created_at": now, "updated_at": now}

    def list(self) -> list[Persona]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(AgentRow).order_by(AgentRow.created_at, AgentRow.id)).all()
        return [Persona.from_row(r) for r in rows]

    def get(self, agent_id: str) -> Persona:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(AgentRow).where(AgentRow.id == agent_id)).first()
        if row is None:
            raise UnknownAgent(f"unknown agent {agent_id!r}")
        return Persona.from_row(row)

    def create(self, body: dict[str, Any], owner_id: str | None = None) -> Persona:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidPersona("'name' must be a non-empty string of at most 200 characters")
        agent_id = body.get("id") or re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:64] or "agent"
        if not isinstance(agent_id, str) or not _ID.match(agent_id):
            raise InvalidPersona("'id' must be lowercase letters, digits, '-' or '_' (at most 64)")
        persona = Persona(agent_id, name.strip(), owner_id=owner_id)
        self._apply(persona, body)
        with self.engine.begin() as conn:
            if conn.execute(sa.select(AgentRow.id).where(AgentRow.id == agent_id)).first():
                raise InvalidPersona(f"an agent with id {agent_id!r} exists; PATCH it instead")
            conn.execute(sa.insert(AgentRow), self._row(persona))
        return persona

    def patch(self, agent_id: str, body: dict[str, Any], by: str | None = None) -> Persona:
        """Change a persona. ``by``: the user asking; None is the operator (the CLI, or the
        local user of an open hub), who may change any. Personas are shared by every document
        (and the watcher), so nobody else may change one they do not own."""
        persona = self.get(agent_id)
        if by is not None and persona.owner_id != by:
            raise PersonaReadOnly(f"agent {agent_id!r} is {'shipped' if persona.owner_id is None else 'not yours'}: "
                                  "only its owner (or the operator) may change it")
        if "name" in body:
            if not isinstance(body["name"], str) or not body["name"].strip() or len(body["name"]) > 200:
                raise InvalidPersona("'name' must be a non-empty string of at most 200 characters")
            persona.name = body["name"].strip()
        self._apply(persona, body)
        with self.engine.begin() as conn:
            conn.execute(sa.update(AgentRow).where(AgentRow.id == agent_id).values(
                name=persona.name, model=persona.model, prompt=persona.prompt, steering=persona.steering,
                color=persona.color, updated_at=utcnow()))
        return persona

    def _apply(self, persona: Persona, body: dict[str, Any]) -> None:
        unknown = set(body) - {"id", "name", "model", "prompt", "steering", "color"}
        if unknown:
            raise InvalidPersona(f"unknown field(s): {', '.join(sorted(unknown))}")
        if "prompt" in body:
            if not isinstance(body["prompt"], str) or len(body["prompt"]) > 4000:
                raise InvalidPersona("'prompt' must be a string of at most 4000 characters")
            persona.prompt = body["prompt"]
        if "model" in body:
            persona.model = check_model(body["model"])
        if "color" in body:
            if not isinstance(body["color"], str) or not _COLOR.match(body["color"]):
                raise InvalidPersona("'color' must look like #1a2b3c")
            persona.color = body["color"]
        if "steering" in body:
            spec = normalize_steering(body["steering"])
            check_known_vectors(spec, self.database_url)
            persona.steering = spec


def check_model(model: Any) -> str:
    """'' (the default model) or one the inference layer serves."""
    if model in (None, ""):
        return ""
    if not isinstance(model, str):
        raise InvalidPersona("'model' must be a string")
    try:
        from inference import Inference

        names = [m.name for m in Inference().models()]
    except Exception:  # noqa: BLE001 - no inference stack here: accept, the worker will judge
        return model
    if model not in names:
        raise InvalidPersona(f"unknown model {model!r}; available: {', '.join(names)}")
    return model

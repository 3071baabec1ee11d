"""The steering spec: what to add to the residual stream, where, and how strongly.

A spec is a list of terms. Each term names a *source* of a direction (a CAA vector from the
library, an SAE feature's decoder row, a llama.cpp control-vector file, or an inline vector), the
layers it acts on, a strength, a method and a scope. Resolving a spec against a model turns it
into plain per-layer interventions that every backend applies the same way:

* ``add``:        h <- h + s * N_L * u
* ``orthogonal``: h <- h - (h.u) u + s * N_L * u   (the component along u is *set*, the rest kept;
                  Neuronpedia's orthogonal decomposition)

where u is the unit direction, N_L the typical residual norm at layer L and s the strength. A PSR
source (``psr.py``) adds a coefficient per token to ``add``: h <- h + s * N_L * c(h) * u, where
c(h) = softplus(w . h/|h| + b) / mean is read from the activation itself (mean 1 over the text it
was trained on; ``gate_coefficients``). Backends that cannot read activations (llama.cpp) use
c = 1, its mean: ``ResolvedSteering.approximations`` says so. The
normalisation by N_L is why one strength means the same thing at every layer: s = 0.5 moves the
residual by half its usual length wherever it is applied. Layer L is the output of block L
(HF ``model.model.layers[L]``, llama.cpp control-vector layer L).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from ..exceptions import InvalidSteering, LayerOutOfRange
from .gguf import confine, read_control_vector
from .strengths import CAA_GUIDES, guide_for

__all__ = [
    "Method", "Scope", "SourceKind", "Source", "SteeringTerm", "SteeringSpec", "ModelInfo",
    "Intervention", "ResolvedSteering", "DirectionProvider", "resolve", "apply_interventions",
    "MAX_STRENGTH", "Gate", "gate_coefficients",
]

#: |strength| above this is rejected: 64 residual norms of push only produces noise.
MAX_STRENGTH = 64.0


class Method(StrEnum):
    ADD = "add"
    ORTHOGONAL = "orthogonal"


class Scope(StrEnum):
    #: Prompt and generated tokens (what a llama.cpp control vector does).
    ALL = "all"
    #: Only the tokens generated after the prompt; the prompt's KV cache stays unsteered.
    GENERATION = "generation"


class SourceKind(StrEnum):
    CAA = "caa"
    SAE = "sae"
    GGUF = "gguf"
    INLINE = "inline"
    PSR = "psr"


_SCOPE_ALIASES = {"all": Scope.ALL, "prompt_and_generation": Scope.ALL, "both": Scope.ALL,
                  "generation": Scope.GENERATION, "generation_only": Scope.GENERATION}


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    name: str = ""
    feature: int | None = None
    vector: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, text: str, vector: Any = None) -> "Source":
        """``caa:NAME``, ``psr:NAME``, ``sae:SAE_ID#FEATURE``, ``gguf:PATH`` or ``inline`` (+ ``vector``)."""
        if not isinstance(text, str) or not text:
            raise InvalidSteering("source must be a string such as 'caa:formal'", param="source")
        kind, _, rest = text.partition(":")
        try:
            kind = SourceKind(kind)
        except ValueError:
            raise InvalidSteering(
                f"unknown source {text!r}: expected caa:NAME, psr:NAME, sae:SAE_ID#FEATURE, gguf:PATH or inline",
                param="source") from None
        if kind is SourceKind.INLINE:
            if not isinstance(vector, (list, tuple)) or not vector:
                raise InvalidSteering("an inline source needs 'vector': a list of numbers", param="vector")
            try:
                values = tuple(float(v) for v in vector)
            except (TypeError, ValueError):
                raise InvalidSteering("'vector' must contain only numbers", param="vector") from None
            if not all(math.isfinite(v) for v in values):
                raise InvalidSteering("'vector' contains NaN or infinity", param="vector")
            if not any(values):
                raise InvalidSteering("'vector' is all zeros: it has no direction", param="vector")
            return cls(kind, vector=values)
        if not rest:
            raise InvalidSteering(f"source {text!r} names nothing after '{kind}:'", param="source")
        if kind is SourceKind.SAE:
            sae_id, sep, feat = rest.rpartition("#")
            if not sep or not sae_id or not feat.isdigit():
                raise InvalidSteering(f"SAE source {text!r} must look like sae:SAE_ID#FEATURE",
                                      param="source")
            return cls(kind, sae_id, feature=int(feat))
        return cls(kind, rest)

    def __str__(self) -> str:
        if self.kind is SourceKind.INLINE:
            return "inline"
        if self.kind is SourceKind.SAE:
            return f"sae:{self.name}#{self.feature}"
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class SteeringTerm:
    source: Source
    #: None only for a psr or built caa source given without one: the vector's own (calibrated)
    #: default, looked up at resolve time.
    strength: float | None
    layers: tuple[int, ...] | None = None  # None: the layers the source was built at
    method: Method = Method.ADD
    scope: Scope = Scope.ALL

    @classmethod
    def from_json(cls, obj: Any, index: int = 0) -> "SteeringTerm":
        where = f"steering[{index}]"
        if not isinstance(obj, Mapping):
            raise InvalidSteering(f"{where} must be an object", param=where)
        unknown = set(obj) - {"source", "vector", "layer", "layers", "strength", "method", "scope",
                              "apply_to"}
        if unknown:
            raise InvalidSteering(f"{where}: unknown field(s) {sorted(unknown)}", param=where)
        source = Source.parse(obj.get("source", "inline" if "vector" in obj else ""), obj.get("vector"))
        strength = obj.get("strength")
        if strength is None and (source.kind in (SourceKind.PSR, SourceKind.SAE) or (
                source.kind is SourceKind.CAA and source.name not in CAA_GUIDES)):
            # stored with the vector or the SAE (its calibration): resolve() asks the library
            return cls(source, None, *cls._rest(obj, where, source))
        if strength is None:  # the source's measured default (steering/strengths.py); 1 where none is known
            guide = guide_for(str(source))
            strength = guide.default if guide is not None else 1.0
        if isinstance(strength, bool) or not isinstance(strength, (int, float)):
            raise InvalidSteering(f"{where}.strength must be a number", param="strength")
        strength = float(strength)
        if not math.isfinite(strength):
            raise InvalidSteering(f"{where}.strength is not finite", param="strength")
        if abs(strength) > MAX_STRENGTH:
            raise InvalidSteering(
                f"{where}.strength {strength:g} is too large (|strength| <= {MAX_STRENGTH:g}; it is "
                "measured in typical residual norms)", param="strength")
        return cls(source, strength, *cls._rest(obj, where, source))

    @staticmethod
    def _rest(obj: Mapping, where: str, source: Source) -> tuple[tuple[int, ...] | None, Method, Scope]:
        """A term's layers, method and scope, checked."""
        layers = obj.get("layers", obj.get("layer"))
        if layers is not None:
            if isinstance(layers, int) and not isinstance(layers, bool):
                layers = [layers]
            if (not isinstance(layers, list) or not layers
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers)):
                raise InvalidSteering(f"{where}.layers must be an integer or a list of integers",
                                      param="layers")
            layers = tuple(sorted(set(layers)))
        elif source.kind is SourceKind.INLINE:
            raise InvalidSteering(f"{where}: an inline vector needs 'layer' or 'layers'", param="layers")
        try:
            method = Method(obj.get("method", "add"))
        except ValueError:
            raise InvalidSteering(f"{where}.method must be 'add' or 'orthogonal'", param="method") from None
        scope_name = obj.get("scope", obj.get("apply_to", "all"))
        if scope_name not in _SCOPE_ALIASES:
            raise InvalidSteering(f"{where}.scope must be 'all' or 'generation'", param="scope")
        return layers, method, _SCOPE_ALIASES[scope_name]

    def to_json(self) -> dict:
        out: dict[str, Any] = {"source": str(self.source), "strength": self.strength,
                               "method": str(self.method), "scope": str(self.scope)}
        if self.strength is None:  # a stored vector's term at its default
            del out["strength"]
        if self.layers is not None:
            out["layers"] = list(self.layers)
        if self.source.vector is not None:
            out["vector"] = list(self.source.vector)
        return out


@dataclass(frozen=True)
class SteeringSpec:
    terms: tuple[SteeringTerm, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> "SteeringSpec":
        """Accepts ``null``, a list of terms, ``{"terms": [...]}`` or a JSON string of either."""
        if obj is None:
            return cls()
        if isinstance(obj, str):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as exc:
                raise InvalidSteering(f"steering is not valid JSON: {exc}", param="steering") from None
        if isinstance(obj, Mapping):
            if set(obj) - {"terms"}:
                raise InvalidSteering("steering must be a list of terms or {'terms': [...]}",
                                      param="steering")
            obj = obj.get("terms", [])
        if not isinstance(obj, list):
            raise InvalidSteering("steering must be a list of terms", param="steering")
        if len(obj) > 32:
            raise InvalidSteering("at most 32 steering terms", param="steering")
        return cls(tuple(SteeringTerm.from_json(t, i) for i, t in enumerate(obj)))

    def to_json(self) -> list[dict]:
        return [t.to_json() for t in self.terms]

    def __bool__(self) -> bool:
        return bool(self.terms)


@dataclass(frozen=True)
class ModelInfo:
    """What resolution needs to know about a model."""
    key: str  # identifies the weights (vectors are stored per model key)
    n_layers: int
    d_model: int
    layer_norms: tuple[float, ...]  # typical ||h|| at the output of each block


class DirectionProvider(Protocol):
    """Looks up named directions; implemented by the vector library and the SAE registry."""

    def caa_vectors(self, name: str, model: ModelInfo) -> dict[int, np.ndarray]: ...

    def sae_direction(self, sae_id: str, feature: int, model: ModelInfo) -> tuple[int, np.ndarray]: ...

    def caa_default_strength(self, name: str, model: ModelInfo) -> float:
        """A built CAA vector's calibrated default strength (the general guide's where none was measured)."""

    def psr_vectors(self, name: str, model: ModelInfo) -> tuple[dict[int, tuple[np.ndarray, "Gate"]], float]:
        """{layer: (direction, gate)} and the vector's default strength."""

    def sae_default_strength(self, sae_id: str, feature: int, model: ModelInfo) -> float:
        """An SAE feature's default strength: calibrated where measured, else from its typical activation."""


@dataclass(frozen=True)
class Gate:
    """A PSR coefficient per token: softplus(w . h/|h| + b) / mean (``gate_coefficients``)."""
    w: np.ndarray  # (d_model,) float32
    b: float
    mean: float

    def coefficients(self, h: Any) -> Any:
        import torch

        return gate_coefficients(h, torch.as_tensor(self.w, dtype=h.dtype, device=h.device), self.b, self.mean)


def gate_coefficients(h: Any, w: Any, b: Any, mean: Any = 1.0) -> Any:
    """softplus(w . h/|h| + b) / mean for torch activations ``h`` (..., d): one per token. ``w`` is
    one vector or one per row (vLLM batches requests), ``b`` and ``mean`` scalars or one per row.
    The one formula PSR training, the torch hooks and the vLLM hooks share."""
    import torch

    return torch.nn.functional.softplus((h * w).sum(-1) / h.norm(dim=-1).clamp_min(1e-6) + b) / mean


@dataclass
class Intervention:
    layer: int
    direction: np.ndarray  # unit vector, float32, (d_model,)
    scale: float  # absolute: strength * N_layer
    method: Method
    scope: Scope
    #: PSR: the coefficient per token (None: constant 1).
    gate: Gate | None = None
    #: The term's source, as written (``psr:winter``): what an approximation note names.
    source: str = ""


@dataclass
class ResolvedSteering:
    interventions: list[Intervention] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.interventions)

    def for_scope(self, *scopes: Scope) -> list[Intervention]:
        return [iv for iv in self.interventions if iv.scope in scopes]

    @property
    def needs_hooks(self) -> bool:
        """True when something here cannot be a constant per-layer vector."""
        return any(iv.method is Method.ORTHOGONAL or iv.gate is not None for iv in self.interventions)

    def approximations(self) -> list[str]:
        """What a backend without hooks (llama.cpp's control vectors) does differently: a PSR
        coefficient per token becomes its mean."""
        return [f"{src}: approximation: constant coefficient (its mean over the training text; torch and vllm "
                "vary it per token)" for src in dict.fromkeys(iv.source for iv in self.interventions if iv.gate)]

    def fingerprint(self, *scopes: Scope) -> str:
        """Stable hash of what this steering does to the tokens in ``scopes`` ('' when nothing)."""
        ivs = self.for_scope(*scopes) if scopes else self.interventions
        if not ivs:
            return ""
        h = hashlib.sha256()
        for iv in sorted(ivs, key=lambda iv: (iv.layer, str(iv.method), str(iv.scope))):
            h.update(f"{iv.layer}|{iv.method}|{iv.scope}|{iv.scale:.6g}|".encode())
            h.update(np.round(iv.direction, 6).astype(np.float32).tobytes())
            if iv.gate is not None:
                h.update(f"gate|{iv.gate.b:.6g}|{iv.gate.mean:.6g}|".encode())
                h.update(np.round(iv.gate.w, 6).astype(np.float32).tobytes())
        return h.hexdigest()[:16]

    def control_vector(self, n_layers: int, d_model: int, *scopes: Scope) -> np.ndarray | None:
        """Sum of the additive interventions per layer, shape (n_layers, d_model), or None. A gated
        (PSR) term counts at its mean coefficient, 1 (``approximations`` says so)."""
        ivs = [iv for iv in self.for_scope(*scopes) if iv.method is Method.ADD]
        if not ivs:
            return None
        out = np.zeros((n_layers, d_model), dtype=np.float32)
        for iv in ivs:
            out[iv.layer] += iv.scale * iv.direction
        return out


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n == 0.0:
        raise InvalidSteering(f"{what} has no direction (zero or non-finite norm)")
    return v / n


def _nearest(available: Iterable[int], layer: int) -> int:
    return min(available, key=lambda a: (abs(a - layer), a))


def resolve(spec: SteeringSpec, model: ModelInfo, provider: DirectionProvider | None = None,
            min_layer: int = 0) -> ResolvedSteering:
    """Turn a spec into unit directions and absolute scales for ``model``.

    ``min_layer`` is the first layer the backend can steer (1 for llama.cpp, whose control
    vectors have no slot for layer 0).
    """
    out = ResolvedSteering()
    for i, term in enumerate(spec.terms):
        src = term.source
        by_layer: dict[int, np.ndarray]
        gates: dict[int, Gate] = {}
        strength = term.strength
        if src.kind is SourceKind.INLINE:
            if len(src.vector) != model.d_model:
                raise InvalidSteering(
                    f"steering[{i}]: inline vector has {len(src.vector)} values, the model's residual "
                    f"stream has {model.d_model}", param="vector")
            by_layer = {layer: np.asarray(src.vector, np.float32) for layer in term.layers}
        elif src.kind is SourceKind.GGUF:
            folder = getattr(provider, "control_vectors", None)
            if folder is None:
                raise InvalidSteering(f"steering[{i}]: gguf sources need the control_vectors folder "
                                      "(a vector library)", param="source")
            by_layer = read_control_vector(confine(src.name, folder))
        elif provider is None:
            raise InvalidSteering(f"steering[{i}]: {src.kind} sources need a vector library")
        elif src.kind is SourceKind.CAA:
            by_layer = provider.caa_vectors(src.name, model)
            if strength is None:
                strength = provider.caa_default_strength(src.name, model)
        elif src.kind is SourceKind.PSR:
            if term.method is not Method.ADD:
                raise InvalidSteering(f"steering[{i}]: a psr source steers with method 'add' (its coefficient "
                                      "per token scales an addition)", param="method")
            learnt, default = provider.psr_vectors(src.name, model)
            by_layer, gates = {k: v for k, (v, _) in learnt.items()}, {k: g for k, (_, g) in learnt.items()}
            strength = default if term.strength is None else term.strength
        else:
            layer, row = provider.sae_direction(src.name, src.feature, model)
            by_layer = {layer: row}
            if strength is None:
                strength = provider.sae_default_strength(src.name, src.feature, model)
        for layer, v in by_layer.items():
            if v.shape[-1] != model.d_model:
                raise InvalidSteering(
                    f"steering[{i}]: {src} has width {v.shape[-1]}, the model has {model.d_model}")
        layers = term.layers if term.layers is not None else tuple(sorted(by_layer))
        for layer in layers:
            if not min_layer <= layer < model.n_layers:
                hint = " (layer 0 cannot be steered with llama.cpp control vectors)" if (
                    layer == 0 and min_layer == 1) else ""
                raise LayerOutOfRange(
                    f"steering[{i}]: layer {layer} is out of range {min_layer}..{model.n_layers - 1}{hint}",
                    param="layers")
            at = layer if layer in by_layer else _nearest(by_layer, layer)
            out.interventions.append(Intervention(
                layer, _unit(by_layer[at], f"steering[{i}] ({src}) at layer {layer}"),
                strength * model.layer_norms[layer], term.method, term.scope, gates.get(at), str(src)))
    return out


def apply_interventions(h: Any, interventions: Sequence[Intervention], directions: Any = None) -> Any:
    """Apply interventions to a torch tensor ``h`` (..., d) (the torch engine's hooks)."""
    import torch

    # Orthogonal terms first, then the additions: the order every backend uses (vLLM batches them).
    order = sorted(range(len(interventions)), key=lambda j: interventions[j].method is not Method.ORTHOGONAL)
    h0 = h
    for j in order:
        iv = interventions[j]
        u = directions[j] if directions is not None else torch.as_tensor(
            iv.direction, dtype=h.dtype, device=h.device)
        if iv.method is Method.ORTHOGONAL:
            h = h - (h @ u).unsqueeze(-1) * u
        if iv.gate is not None:  # PSR: the coefficient read from the activation as it came out of the block
            h = h + (iv.scale * iv.gate.coefficients(h0)).unsqueeze(-1) * u
        else:
            h = h + iv.scale * u
    return h

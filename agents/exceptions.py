"""One exception per failure. API-facing ones are ``TinymorphError``s, so the hub's
``error_response`` turns them into ``{"error": {type, message}}`` with the right status."""

from __future__ import annotations

from collab.exceptions import InvalidRequest, TinymorphError

__all__ = ["AgentError", "UnknownAgent", "UnknownRun", "InvalidTask", "InvalidAnchor", "InvalidSteeringSpec",
           "InvalidPersona", "RunNotCancellable", "HubUnreachable", "RunRefused", "RunCancelled", "RunLeased",
           "ModelFailed", "PersonaReadOnly", "InvalidVectorRequest", "UnknownVectorName", "VectorBusy"]


class AgentError(TinymorphError):
    """Base of the agents' errors."""


class UnknownAgent(AgentError):
    http_status = 404


class UnknownRun(AgentError):
    http_status = 404


class InvalidTask(InvalidRequest, AgentError):
    """Unknown task or mode, or a task that needs a range without one."""


class InvalidAnchor(InvalidRequest, AgentError):
    """An anchor or range that is not a Yjs relative position into this document's text."""


class InvalidSteeringSpec(InvalidRequest, AgentError):
    """The steering terms do not validate against the inference layer's spec."""


class InvalidPersona(InvalidRequest, AgentError):
    pass


class PersonaReadOnly(AgentError):
    """A persona the caller does not own (shipped ones belong to the operator)."""
    http_status = 403
    close_code = 4403


class RunNotCancellable(AgentError):
    """The run already finished."""
    http_status = 409


class HubUnreachable(AgentError):
    """The worker could not reach the hub (retried with backoff)."""
    http_status = 503


class RunRefused(AgentError):
    """The hub closed the agent's socket (revoked token, unknown document, no permission)."""
    http_status = 403


class RunCancelled(AgentError):
    """Somebody cancelled the run while it was working."""
    http_status = 409


class RunLeased(AgentError):
    """Another attempt of this run is alive (a redelivered message while the first still works)."""
    http_status = 409


class ModelFailed(AgentError):
    """The model call failed; the run is marked failed with this reason, never retried."""
    http_status = 502


class InvalidVectorRequest(InvalidRequest, AgentError):
    """A vector request with a bad name, pairs (empty, one-sided, too long, too many) or layers."""


class UnknownVectorName(AgentError):
    """No vector and no build of it by that name."""
    http_status = 404


class VectorBusy(AgentError):
    """A build of that name is running, or the name is a shipped vector's."""
    http_status = 409

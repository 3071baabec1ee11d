"""AI co-editors: agents that join documents as Yjs peers, driven by Celery workers.

    hub (REST, ``requests`` map, watcher) ──send_task──► Celery ──► run_agent ──► Participant
        ▲                                                            │ inference (steered)
        └──────────── websocket updates, attributed by the run's token ◄┘
"""

from .anchors import relative_position, resolve
from .api import AgentService, routes
from .celery_app import create_celery
from .exceptions import (AgentError, HubUnreachable, InvalidAnchor, InvalidPersona, InvalidSteeringSpec,
                         InvalidTask, ModelFailed, RunCancelled, RunLeased, RunNotCancellable, RunRefused,
                         UnknownAgent, UnknownRun)
from .participant import Participant
from .personas import SHIPPED, Persona, PersonaStore, normalize_steering
from .prompts import Edit, Mode, Task
from .runs import ClaimOutcome, RunStatus, RunStore
from .tasks import run_agent
from .worker import EmbeddedWorker

__all__ = [
    "AgentService", "routes", "create_celery", "run_agent", "EmbeddedWorker", "Participant",
    "Persona", "PersonaStore", "SHIPPED", "normalize_steering", "Task", "Mode", "Edit",
    "RunStatus", "RunStore", "ClaimOutcome", "relative_position", "resolve",
    "AgentError", "UnknownAgent", "UnknownRun", "InvalidTask", "InvalidAnchor", "InvalidSteeringSpec",
    "InvalidPersona", "RunNotCancellable", "HubUnreachable", "RunRefused", "RunCancelled", "RunLeased",
    "ModelFailed",
]

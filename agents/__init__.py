"""AI co-editors and the model work on documents, driven by Celery workers; the hub extension
that connects them (``extension.py``).

    hub (REST, ``requests`` map, watcher) ──send_task──► Celery ──► run_agent ──► Participant
        ▲                                                            │ inference (steered)
        └──────────── websocket updates, attributed by the run's token ◄┘
    hub (document.updated, debounced) ──send_task──► Celery ──► rebuild_graph ──► graph tables
"""

from .anchors import relative_position, resolve
from .extension import AgentsExtension, extension
from .celery_app import create_celery
from .exceptions import (AgentError, HubUnreachable, InvalidAnchor, InvalidPersona, InvalidSteeringSpec, PersonaReadOnly,
                         InvalidTask, ModelFailed, RunCancelled, RunLeased, RunNotCancellable, RunRefused,
                         UnknownAgent, UnknownRun)
from .participant import Participant
from .personas import SHIPPED, Persona, PersonaStore, normalize_steering
from .prompts import Edit, Mode, Task
from .runs import ClaimOutcome, RunStatus, RunStore
from .graph import GraphBuilder, GraphReader, GraphScheduler, split_paragraphs
from .routes import routes
from .service import AgentService
from .tasks import rebuild_graph, run_agent, search_graph
from .worker import WorkerProcesses, WorkerState

__all__ = [
    "AgentService", "AgentsExtension", "extension", "routes", "create_celery", "run_agent", "rebuild_graph",
    "search_graph", "WorkerProcesses", "WorkerState", "Participant",
    "GraphBuilder", "GraphReader", "GraphScheduler", "split_paragraphs",
    "Persona", "PersonaStore", "SHIPPED", "normalize_steering", "Task", "Mode", "Edit",
    "RunStatus", "RunStore", "ClaimOutcome", "relative_position", "resolve",
    "AgentError", "UnknownAgent", "UnknownRun", "InvalidTask", "InvalidAnchor", "InvalidSteeringSpec",
    "InvalidPersona", "RunNotCancellable", "HubUnreachable", "RunRefused", "RunCancelled", "RunLeased",
    "ModelFailed", "PersonaReadOnly",
]

"""The Celery tasks: an agent run (claim the run, join the document, write, finish), and the
embedding graph's rebuild and search (the model work edits trigger, kept out of the hub process).

Celery conventions: a named task, ``acks_late`` with ``reject_on_worker_lost`` (a crashed worker's
message goes back to the queue instead of being lost), time limits, retries with exponential
backoff for the one transient failure (the hub is unreachable). Model failures and refusals are
not retried: they mark the run failed with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from collab.config import Settings

from .exceptions import HubUnreachable, InvalidVectorRequest, ModelFailed, RunCancelled, RunLeased, RunRefused
from .runs import ClaimOutcome, RunStatus, RunStore

__all__ = ["run_agent", "rebuild_graph", "search_graph", "register", "TASK_OPTIONS", "RUN_TASK", "GRAPH_TASK",
           "SEARCH_TASK", "Resources", "resources", "hub_ws_url", "build_vector"]

log = logging.getLogger("tinymorph.agents.tasks")

RUN_TASK = "tinymorph.agents.run"
GRAPH_TASK = "tinymorph.graph.rebuild"
SEARCH_TASK = "tinymorph.graph.search"
#: A lease older than this belongs to a dead attempt; heartbeats come every quarter second.
LEASE_S = 10.0
TOKEN_TTL_S = 3600


def hub_ws_url(settings: Settings) -> str:
    if settings.hub_url:
        base = settings.hub_url.rstrip("/")
    else:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        base = f"http://{host}:{settings.port}"
    return base.replace("https://", "wss://").replace("http://", "ws://") + "/ws"


@dataclass
class Resources:
    """What a worker process keeps between tasks: the database, the token issuer, the model."""
    settings: Settings

    @cached_property
    def store(self):
        from collab.store import Store

        return Store(self.settings.database_url, sqlite_synchronous=self.settings.sqlite_synchronous,
                     limits=self.settings.update_limits())

    @cached_property
    def runs(self) -> RunStore:
        return RunStore(self.store.engine)

    @cached_property
    def auth(self):
        from collab.auth import Authenticator

        return Authenticator(self.store, self.settings.signing_secret(), self.settings.auth_mode,
                             self.settings.token_ttl_s)

    @cached_property
    def inference(self):
        from inference import Inference, InferenceConfig

        return Inference(InferenceConfig(data_dir=self.settings.data_dir, database_url=self.settings.database_url))

    def engine(self, model: str):
        return self.inference.engine(model or None)

    @cached_property
    def graph(self):
        from collab.history import History
        from inference.embeddings import Embedder

        from .graph import GraphBuilder

        return GraphBuilder(History(self.store), Embedder())


_resources: dict[int, Resources] = {}
_lock = threading.Lock()


def resources(app: Any) -> Resources:
    """One set per process (a prefork child builds its own after the fork)."""
    settings = getattr(app, "tinymorph_settings", None) or Settings.load()
    key = os.getpid()
    with _lock:
        res = _resources.get(key)
        if res is None or res.settings is not settings:
            res = _resources[key] = Resources(settings)
        return res


def mint_token(res: Resources, run: dict[str, Any]) -> tuple[str, str]:
    """The run's own ``agent`` token, scoped to its document; the hub logs its ``meta`` with every
    update the agent sends (who asked, which run, model, steering)."""
    params = run["params"]
    persona = params["persona"]
    meta = {"run_id": run["id"], "agent_id": persona["id"], "model": params.get("model") or "default",
            "steering": params.get("steering") or [], "requested_by": run["requested_by"],
            "requested_by_name": run.get("requested_by_name", ""), "task": run["task"], "mode": run["mode"]}
    return res.auth.issue(user_id=persona["id"], name=persona["name"], role="agent", doc_id=run["doc_id"],
                          ttl_s=TOKEN_TTL_S, meta=meta)


#: The Celery options of the run task; ``register`` binds it to an app explicitly (not
#: ``shared_task``: its "current app" is thread-local, and the embedded worker is another thread).
TASK_OPTIONS: dict[str, Any] = dict(
    bind=True, shared=False, name=RUN_TASK, acks_late=True, reject_on_worker_lost=True, autoretry_for=(HubUnreachable,),
    retry_backoff=1, retry_backoff_max=30, retry_jitter=True, max_retries=5, soft_time_limit=600, time_limit=660)


#: Graph tasks are idempotent (a rebuild starts from the database), so a lost one is simply
#: sent again by the next edit; no retries, short limits.
GRAPH_OPTIONS: dict[str, Any] = dict(bind=True, shared=False, acks_late=True, soft_time_limit=300, time_limit=330)


def register(app: Any) -> Any:
    from .vector_jobs import VECTOR_OPTIONS, VECTOR_TASK

    app.task(name=GRAPH_TASK, **GRAPH_OPTIONS)(rebuild_graph)
    app.task(name=SEARCH_TASK, **GRAPH_OPTIONS)(search_graph)
    app.task(name=VECTOR_TASK, **VECTOR_OPTIONS)(build_vector)
    return app.task(**TASK_OPTIONS)(run_agent)


def rebuild_graph(self, doc_id: str) -> dict[str, Any]:
    """Bring the document's embedding graph up to the end of its log (see graph.py); the summary
    says which process did it (``graph.updated`` carries it, for diagnostics)."""
    return resources(self.app).graph.update(doc_id) | {"worker_pid": os.getpid()}


def search_graph(self, query: str, doc_ids: list[str] | None, limit: int = 10) -> list[dict[str, Any]]:
    """Embed the query and rank the stored paragraphs of ``doc_ids`` (None: every document)."""
    builder = resources(self.app).graph
    (vector,), _ = builder.embedder.embed([query])
    return builder.reader.nearest(vector, doc_ids, limit)


def run_agent(self, run_id: str) -> dict[str, Any]:
    """Claim the run, join its document as the agent, write, and record how it ended."""
    res = resources(self.app)
    owner = f"{self.request.hostname or 'worker'}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    outcome, run = res.runs.claim(run_id, owner, LEASE_S)
    if outcome is ClaimOutcome.LEASED:
        # A redelivered message while the first attempt is alive: check again once its lease
        # would have expired. If that attempt finishes first, the retry finds the run done.
        raise self.retry(countdown=LEASE_S, max_retries=100, exc=RunLeased(f"run {run_id} is leased"))
    if outcome is not ClaimOutcome.CLAIMED:
        log.info("run %s: nothing to do (%s)", run_id, outcome)
        return {"run_id": run_id, "outcome": str(outcome)}
    token, token_id = mint_token(res, run)
    try:
        from .participant import Participant

        participant = Participant(run, ws_url=hub_ws_url(res.settings), token=token,
                                  engine=res.engine(run["params"].get("model", "")), runs=res.runs, owner=owner)
        result = asyncio.run(participant.run())
    except RunCancelled:
        res.runs.finish(run_id, RunStatus.CANCELLED, owner=owner, error="cancelled")
        return {"run_id": run_id, "status": "cancelled"}
    except RunLeased:
        log.warning("run %s: lost its lease to another attempt; stopping", run_id)
        return {"run_id": run_id, "status": "superseded"}
    except HubUnreachable as exc:
        if self.request.retries >= self.max_retries:
            res.runs.finish(run_id, RunStatus.FAILED, owner=owner, error=str(exc))
            raise
        _release(res, run_id, owner)
        raise
    except (ModelFailed, RunRefused) as exc:
        res.runs.finish(run_id, RunStatus.FAILED, owner=owner, error=str(exc))
        return {"run_id": run_id, "status": "failed", "error": str(exc)}
    except SoftTimeLimitExceeded:
        res.runs.finish(run_id, RunStatus.FAILED, owner=owner, error="the run exceeded its time limit")
        return {"run_id": run_id, "status": "failed", "error": "time limit"}
    except Exception as exc:  # noqa: BLE001 - any other failure still ends the run with a reason
        log.exception("run %s failed", run_id)
        res.runs.finish(run_id, RunStatus.FAILED, owner=owner, error=f"{type(exc).__name__}: {exc}")
        return {"run_id": run_id, "status": "failed", "error": str(exc)}
    finally:
        res.store.revoke_token(token_id)
    res.runs.finish(run_id, RunStatus.DONE, owner=owner, result=result)
    return {"run_id": run_id, "status": "done", **result}


def _release(res: Resources, run_id: str, owner: str) -> None:
    """Give the lease back before a retry, so the retry is not held off by our own lease."""
    import sqlalchemy as sa

    from .models import RunRow

    with res.store.engine.begin() as conn:
        conn.execute(sa.update(RunRow).where(RunRow.id == run_id, RunRow.lease_owner == owner)
                     .values(lease_owner=None, heartbeat_at=None))


def build_vector(self, job_id: str) -> dict[str, Any]:
    """(Celery task ``tinymorph.vectors.build``.) Build the job's vector with the reference engine,
    reporting progress per pair (or, for an instruction, per PSR training stage); any failure marks
    the job failed with its reason."""
    from inference import InferenceError

    from .vector_jobs import JobStatus, VectorJobs

    res = resources(self.app)
    jobs = VectorJobs(res.store.engine)
    job = jobs.get(job_id)
    if job is None or job["status"] != JobStatus.BUILDING:
        return {"job_id": job_id, "outcome": "nothing to do"}
    try:
        inference = res.inference
        info = inference.torch_engine().info
        layers = job["layers"] or [info.n_layers // 3]
        if max(layers) >= info.n_layers:
            raise InvalidVectorRequest(f"layers: this model has layers 1-{info.n_layers - 1}")
        if job.get("instruction"):
            layers = layers[:1]  # PSR learns at one layer
            _train_psr(res, job, layers[0], lambda fraction: jobs.update(job_id, progress=round(fraction, 3)))
            jobs.update(job_id, status=str(JobStatus.READY), progress=1.0, layers=layers)
            return {"job_id": job_id, "status": "ready", "layers": layers}
        pairs, share, paragraphs = [tuple(p) for p in job["pairs"]], 1.0, 0
        if job.get("voice"):  # first the pairs (half the progress), then the vector
            paragraphs, pairs = _voice_pairs(res, job["voice"], lambda done: jobs.update(job_id, progress=done / 2))
            share = 0.5
        # Building takes the first 80% of the progress, calibrating its strength the rest.
        start = 1 - share
        inference.library.build(job["name"], info, pairs, layers,
                                source=f"voice:{job['voice']['author_id']}" if job.get("voice") else f"rest:{job['requested_by']}",
                                on_pair=lambda done, total: jobs.update(
                                    job_id, progress=round(start + 0.8 * share * done / total, 3)))
        if paragraphs:  # what the pairs came from: the writer's paragraphs, cut into sentences
            inference.library.set_provenance(job["name"], info.key, voice={
                "paragraphs": paragraphs, "unit": "sentence", "doc_ids": job["voice"]["doc_ids"]})
        _calibrate(res, job["name"], info.key, pairs,
                   lambda f: jobs.update(job_id, progress=round(start + share * (0.8 + 0.19 * f), 3)))
    except (InferenceError, InvalidVectorRequest) as exc:
        jobs.update(job_id, status=str(JobStatus.FAILED), error=str(exc))
        return {"job_id": job_id, "status": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any failure still ends the job with a reason
        log.exception("vector job %s failed", job_id)
        jobs.update(job_id, status=str(JobStatus.FAILED), error=f"{type(exc).__name__}: {exc}")
        return {"job_id": job_id, "status": "failed", "error": str(exc)}
    jobs.update(job_id, status=str(JobStatus.READY), progress=1.0, layers=layers)
    return {"job_id": job_id, "status": "ready", "layers": layers}


def _calibrate(res: Resources, name: str, model_key: str, pairs: list[tuple[str, str]], progress: Any) -> None:
    """Measure the new vector's default strength and range on the default engine (the one runs
    use) and store them with it (``inference.steering.calibration``: the largest strength within
    the fluency budget whose continuations move toward the positive examples, by MiniLM). The
    ladder's size comes from ``CalibrationConfig.from_env`` (``TINYMORPH_CALIBRATION``)."""
    import numpy as np

    from inference.embeddings import Embedder
    from inference.steering.calibration import CalibrationConfig, calibrate, pair_concept

    embedder = Embedder()
    concept = pair_concept(lambda texts: np.asarray(embedder.embed(list(texts))[0]), pairs)
    guide, points = calibrate(res.engine(""), {"source": f"caa:{name}"}, concept, CalibrationConfig.from_env(),
                              progress)
    res.inference.library.set_provenance(name, model_key, strength=guide.to_json() | {
        "points": [p.to_json() for p in points]})


def _train_psr(res: Resources, job: dict[str, Any], layer: int, progress: Any) -> None:
    """PSR (``inference.steering.psr``): learn the instruction's effect with the torch engine from
    texts the default engine (llama.cpp: faster) writes, store it as ``psr:NAME``. The training's
    size comes from ``PSRConfig.from_env`` (``TINYMORPH_PSR``: tests make it tiny)."""
    import dataclasses

    from inference.steering.psr import PSRConfig, train

    inference = res.inference
    engine = inference.torch_engine()
    config = dataclasses.replace(PSRConfig.from_env(), layer=layer)
    psr = train(engine, job["instruction"], config, writer=res.engine(""), progress=lambda f, _msg: progress(0.99 * f))
    inference.library.put_psr(job["name"], engine.info, psr, source=f"rest:{job['requested_by']}")


def _voice_pairs(res: Resources, voice: dict[str, Any], progress: Any) -> tuple[int, list[tuple[str, str]]]:
    """How many paragraphs the writer wrote in the documents (``vector_jobs.voice_paragraphs``),
    and their sentences each against the model's rewrite of it (``vector_jobs.voice_pairs``)."""
    from collab.history import History

    from .vector_jobs import VOICE_MIN_PARAGRAPHS, voice_pairs, voice_paragraphs

    paragraphs = voice_paragraphs(History(res.store), voice["doc_ids"], voice["author_id"])
    if len(paragraphs) < VOICE_MIN_PARAGRAPHS:
        raise InvalidVectorRequest(f"voice: {len(paragraphs)} paragraphs written by {voice['author_id']} in these "
                                   f"documents; at least {VOICE_MIN_PARAGRAPHS} are needed")
    pairs = voice_pairs(res.engine(""), paragraphs, progress)
    if not pairs:  # the model echoed every sentence back, or wrote nothing: no direction to learn
        raise InvalidVectorRequest(f"voice: the model rewrote none of the {len(paragraphs)} paragraphs' sentences "
                                   "differently; try other documents")
    return len(paragraphs), pairs

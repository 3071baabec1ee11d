"""Unit tests of the run lease state machine (``agents/runs.py``): exactly-once runs.

A real ``RunStore`` on a real SQLite database (schema from the Alembic migrations). Time is
controlled through the data: a dead worker's lease is made stale by moving its ``heartbeat_at``
into the past, not by sleeping (one test also lets a short lease run out on the wall clock).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from agents_support import migrated_store

from agents import ClaimOutcome, RunNotCancellable, RunStatus, RunStore, UnknownRun
from agents.models import RunRow
from agents.runs import request_run_id

LEASE_S = 60.0  # a lease far longer than any test: "live" unless a test makes it stale

QUEUED, RUNNING, STREAMING = RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.STREAMING
DONE, FAILED, CANCELLED = RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED
ALL = [QUEUED, RUNNING, STREAMING, DONE, FAILED, CANCELLED]

#: The state machine as the module docstring draws it (written out here, not read from the code).
LEGAL = {
    QUEUED: {RUNNING, FAILED, CANCELLED},
    RUNNING: {RUNNING, STREAMING, DONE, FAILED, CANCELLED},  # running -> running: a redelivered attempt
    STREAMING: {RUNNING, DONE, FAILED, CANCELLED},
    DONE: set(),
    FAILED: set(),
    CANCELLED: set(),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = migrated_store(tmp_path_factory.mktemp('runs') / 'runs.db')
    yield store
    store.close()


@pytest.fixture
def runs(store) -> RunStore:
    return RunStore(store.engine)


@pytest.fixture
def doc_id(store) -> str:
    return store.create_document("runs", "alice")["id"]


def new_run(runs: RunStore, doc_id: str, **kw) -> str:
    row = runs.create(doc_id=doc_id, agent_id="editor", task="continue", mode="suggest",
                      params={"options": {}}, requested_by="alice", requested_by_name="Alice", **kw)
    return row["id"]


def age_lease(runs: RunStore, run_id: str, seconds: float) -> None:
    """The lease holder's last heartbeat was ``seconds`` ago (its worker died then)."""
    with runs.engine.begin() as conn:
        conn.execute(sa.update(RunRow).where(RunRow.id == run_id)
                     .values(heartbeat_at=datetime.now(timezone.utc) - timedelta(seconds=seconds)))


def run_in(runs: RunStore, doc_id: str, status: RunStatus) -> str:
    """A run brought to ``status`` through legal steps only."""
    run_id = new_run(runs, doc_id)
    if status is QUEUED:
        return run_id
    outcome, _ = runs.claim(run_id, "w1", LEASE_S)
    assert outcome is ClaimOutcome.CLAIMED
    if status is RUNNING:
        return run_id
    if status is STREAMING:
        assert runs.transition(run_id, STREAMING, owner="w1")
        return run_id
    assert runs.finish(run_id, status, owner="w1")
    return run_id


# -- creation and reading --------------------------------------------------------------------


def test_create_records_a_queued_run_with_no_lease(runs, doc_id):
    run_id = new_run(runs, doc_id)
    row = runs.get(run_id)
    assert row["status"] == QUEUED
    assert row["attempts"] == 0
    assert row["lease_owner"] is None and row["heartbeat_at"] is None
    assert row["started_at"] is None and row["finished_at"] is None
    assert row["cancel_requested"] is False
    assert row["created_at"].tzinfo is not None  # handed back in UTC even from SQLite


def test_get_unknown_run_or_wrong_document_raises_unknown_run(runs, doc_id, store):
    run_id = new_run(runs, doc_id)
    with pytest.raises(UnknownRun):
        runs.get("no-such-run")
    other = store.create_document("other", "bob")["id"]
    with pytest.raises(UnknownRun):
        runs.get(run_id, other)  # a run is only visible through its own document
    assert runs.get(run_id, doc_id)["id"] == run_id


def test_status_enum_knows_which_states_are_terminal():
    assert {s for s in RunStatus if s.terminal} == {DONE, FAILED, CANCELLED}


# -- claiming ----------------------------------------------------------------------------------


def test_claim_of_a_queued_run_succeeds_and_takes_the_lease(runs, doc_id):
    run_id = new_run(runs, doc_id)
    outcome, row = runs.claim(run_id, "w1", LEASE_S)
    assert outcome is ClaimOutcome.CLAIMED
    assert row["status"] == RUNNING
    assert row["lease_owner"] == "w1"
    assert row["attempts"] == 1
    assert row["heartbeat_at"] is not None and row["started_at"] is not None
    assert runs.get(run_id)["lease_owner"] == "w1"


def test_second_worker_is_refused_while_the_lease_is_live(runs, doc_id):
    run_id = new_run(runs, doc_id)
    assert runs.claim(run_id, "w1", LEASE_S)[0] is ClaimOutcome.CLAIMED
    outcome, row = runs.claim(run_id, "w2", LEASE_S)
    assert outcome is ClaimOutcome.LEASED
    after = runs.get(run_id)
    assert after["lease_owner"] == "w1" and after["attempts"] == 1  # nothing changed
    # the holder's heartbeat keeps it live
    assert runs.heartbeat(run_id, "w1") == (True, False)
    assert runs.claim(run_id, "w2", LEASE_S)[0] is ClaimOutcome.LEASED


def test_concurrent_claims_exactly_one_wins(runs, doc_id):
    run_id = new_run(runs, doc_id)
    n = 8
    barrier = threading.Barrier(n)
    outcomes: dict[str, ClaimOutcome] = {}

    def claim(owner: str) -> None:
        barrier.wait(timeout=10)
        outcomes[owner] = runs.claim(run_id, owner, LEASE_S)[0]

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(outcomes) == n
    winners = [o for o, out in outcomes.items() if out is ClaimOutcome.CLAIMED]
    assert len(winners) == 1, outcomes
    assert set(outcomes.values()) == {ClaimOutcome.CLAIMED, ClaimOutcome.LEASED}
    row = runs.get(run_id)
    assert row["lease_owner"] == winners[0] and row["attempts"] == 1


def test_a_requested_run_is_created_once_however_many_creators_race(runs, doc_id):
    """The ``requests`` map's runs: every process that sees the entry derives the same id, and
    the primary key lets one of them create it (a lease handed over mid-request, a process killed
    before writing the id back)."""
    entry = {"agent": "editor", "task": "continue"}
    run_id = request_run_id(doc_id, "r1", entry)
    assert run_id == request_run_id(doc_id, "r1", dict(reversed(entry.items())))  # key order is not content
    assert len({run_id, request_run_id(doc_id, "r2", entry), request_run_id("other", "r1", entry),
                request_run_id(doc_id, "r1", {**entry, "task": "expand"})}) == 4
    n = 6
    barrier = threading.Barrier(n)
    made: list[bool] = []

    def create() -> None:
        barrier.wait(timeout=10)
        row, created = runs.create_once(run_id=run_id, doc_id=doc_id, agent_id="editor", task="continue",
                                        mode="suggest", params={"options": {}}, requested_by="alice",
                                        requested_by_name="Alice")
        assert row["id"] == run_id
        made.append(created)

    threads = [threading.Thread(target=create) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(made) == [False] * (n - 1) + [True]
    assert [r["id"] for r in runs.list(doc_id)].count(run_id) == 1


def test_stale_lease_is_taken_over_and_the_old_holder_is_fenced_off(runs, doc_id):
    """A SIGKILLed worker's message is redelivered: the new attempt takes over, the old one can
    neither renew its lease nor finish the run."""
    run_id = new_run(runs, doc_id)
    _, first = runs.claim(run_id, "w1", LEASE_S)
    assert runs.transition(run_id, STREAMING, owner="w1")
    age_lease(runs, run_id, LEASE_S + 5)  # w1 died: no heartbeat for longer than the lease

    outcome, row = runs.claim(run_id, "w2", LEASE_S)
    assert outcome is ClaimOutcome.CLAIMED
    assert row["lease_owner"] == "w2"
    assert row["attempts"] == 2
    assert row["status"] == RUNNING  # a redelivered attempt starts over
    assert row["started_at"] == first["started_at"]  # the run started when the first attempt did

    # fencing: the old holder's checks fail from now on
    assert runs.heartbeat(run_id, "w1") == (False, False)
    assert runs.transition(run_id, STREAMING, owner="w1") is False
    assert runs.finish(run_id, DONE, owner="w1", result={"by": "w1"}) is False
    assert runs.get(run_id)["status"] == RUNNING
    # ... and so does a third worker's claim while w2 is alive
    assert runs.claim(run_id, "w3", LEASE_S)[0] is ClaimOutcome.LEASED
    # the new holder carries on and finishes
    assert runs.heartbeat(run_id, "w2") == (True, False)
    assert runs.finish(run_id, DONE, owner="w2", result={"by": "w2"}) is True
    done = runs.get(run_id)
    assert done["status"] == DONE and done["result"] == {"by": "w2"}
    assert done["lease_owner"] is None and done["finished_at"] is not None


def test_lease_expires_on_the_wall_clock(runs, doc_id):
    run_id = new_run(runs, doc_id)
    start = time.monotonic()
    assert runs.claim(run_id, "w1", LEASE_S)[0] is ClaimOutcome.CLAIMED
    assert runs.claim(run_id, "w2", LEASE_S)[0] is ClaimOutcome.LEASED
    deadline = start + 10
    while True:  # w1 never beats again: a 0.3 s lease runs out
        outcome, _ = runs.claim(run_id, "w2", 0.3)
        if outcome is ClaimOutcome.CLAIMED or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert outcome is ClaimOutcome.CLAIMED
    assert time.monotonic() - start >= 0.3  # not before the lease ran out
    assert runs.get(run_id)["lease_owner"] == "w2"


def test_lease_released_without_heartbeat_can_be_claimed_at_once(runs, doc_id):
    """A lease with no heartbeat (given back before a retry) holds nobody off."""
    run_id = new_run(runs, doc_id)
    runs.claim(run_id, "w1", LEASE_S)
    with runs.engine.begin() as conn:
        conn.execute(sa.update(RunRow).where(RunRow.id == run_id).values(lease_owner=None, heartbeat_at=None))
    assert runs.claim(run_id, "w2", LEASE_S)[0] is ClaimOutcome.CLAIMED


def test_claim_of_a_missing_run(runs):
    assert runs.claim(uuid.uuid4().hex, "w1", LEASE_S) == (ClaimOutcome.MISSING, None)


@pytest.mark.parametrize("status", [DONE, FAILED, CANCELLED])
def test_claim_of_a_finished_run_does_nothing(runs, doc_id, status):
    run_id = run_in(runs, doc_id, status)
    before = runs.get(run_id)
    outcome, row = runs.claim(run_id, "w2", LEASE_S)
    assert outcome is ClaimOutcome.FINISHED
    assert runs.get(run_id) == before  # status, attempts, lease untouched


def test_cancelled_queued_run_cannot_be_claimed(runs, doc_id):
    run_id = new_run(runs, doc_id)
    row = runs.cancel(run_id, doc_id)
    assert row["status"] == CANCELLED and row["cancel_requested"] is True
    assert row["finished_at"] is not None
    outcome, _ = runs.claim(run_id, "w1", LEASE_S)
    assert outcome is ClaimOutcome.FINISHED
    assert runs.get(run_id)["attempts"] == 0  # never started


def test_cancel_of_a_working_run_reaches_it_through_the_heartbeat(runs, doc_id):
    run_id = new_run(runs, doc_id)
    runs.claim(run_id, "w1", LEASE_S)
    row = runs.cancel(run_id, doc_id)
    assert row["status"] == RUNNING  # a working run stops within a heartbeat, not at once
    assert row["cancel_requested"] is True
    assert runs.heartbeat(run_id, "w1") == (True, True)
    assert runs.finish(run_id, CANCELLED, owner="w1", error="cancelled")
    assert runs.get(run_id)["status"] == CANCELLED


def test_redelivered_attempt_of_a_cancel_requested_run_cancels_it(runs, doc_id):
    """The worker died after the cancel was asked for: the redelivery finishes it as cancelled."""
    run_id = new_run(runs, doc_id)
    runs.claim(run_id, "w1", LEASE_S)
    runs.cancel(run_id, doc_id)
    age_lease(runs, run_id, LEASE_S + 5)
    outcome, _ = runs.claim(run_id, "w2", LEASE_S)
    assert outcome is ClaimOutcome.CANCELLED
    row = runs.get(run_id)
    assert row["status"] == CANCELLED and row["error"] == "cancelled"
    assert row["attempts"] == 1 and row["lease_owner"] is None
    assert runs.claim(run_id, "w3", LEASE_S)[0] is ClaimOutcome.FINISHED


@pytest.mark.parametrize("status", [DONE, FAILED, CANCELLED])
def test_cancel_of_a_finished_run_is_refused(runs, doc_id, status):
    run_id = run_in(runs, doc_id, status)
    with pytest.raises(RunNotCancellable):
        runs.cancel(run_id, doc_id)
    assert runs.get(run_id)["status"] == status


def test_cancel_through_another_document_is_unknown(runs, doc_id, store):
    run_id = new_run(runs, doc_id)
    other = store.create_document("other", "bob")["id"]
    with pytest.raises(UnknownRun):
        runs.cancel(run_id, other)
    assert runs.get(run_id)["status"] == QUEUED and not runs.get(run_id)["cancel_requested"]


# -- the state machine --------------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL, ids=str)
@pytest.mark.parametrize("source", ALL, ids=str)
def test_transition_matrix(runs, doc_id, source, target):
    run_id = run_in(runs, doc_id, source)
    before = runs.get(run_id)
    ok = runs.transition(run_id, target)
    assert ok is (target in LEGAL[source])
    after = runs.get(run_id)
    if ok:
        assert after["status"] == target
        if target.terminal:
            assert after["finished_at"] is not None and after["lease_owner"] is None
    else:
        assert after == before  # an illegal move changes nothing


@pytest.mark.parametrize("terminal", [DONE, FAILED, CANCELLED], ids=str)
def test_terminal_states_never_change_back(runs, doc_id, terminal):
    run_id = run_in(runs, doc_id, terminal)
    before = runs.get(run_id)
    for target in ALL:
        assert runs.transition(run_id, target) is False
        assert runs.transition(run_id, target, owner="w1") is False
    assert runs.claim(run_id, "w9", LEASE_S)[0] is ClaimOutcome.FINISHED
    assert runs.heartbeat(run_id, "w1")[0] is False  # the finished run's lease was released
    assert runs.get(run_id) == before


def test_transition_by_a_non_holder_is_refused(runs, doc_id):
    run_id = run_in(runs, doc_id, RUNNING)
    assert runs.transition(run_id, STREAMING, owner="intruder") is False
    assert runs.finish(run_id, FAILED, owner="intruder", error="x") is False
    assert runs.get(run_id)["status"] == RUNNING
    assert runs.transition(run_id, STREAMING, owner="w1") is True


def test_finish_records_error_and_merges_result(runs, doc_id):
    run_id = run_in(runs, doc_id, RUNNING)
    assert runs.transition(run_id, STREAMING, owner="w1", result={"chars": 3})
    assert runs.finish(run_id, FAILED, owner="w1", error="x" * 5000, result={"tokens": 7})
    row = runs.get(run_id)
    assert row["status"] == FAILED
    assert row["error"] == "x" * 2000  # capped
    assert row["result"] == {"chars": 3, "tokens": 7}


def test_finish_refuses_a_non_terminal_status(runs, doc_id):
    run_id = run_in(runs, doc_id, RUNNING)
    with pytest.raises(AssertionError):
        runs.finish(run_id, STREAMING, owner="w1")


def test_same_owner_may_claim_again(runs, doc_id):
    """A retry by the holder itself is not held off by its own live lease (a new attempt)."""
    run_id = run_in(runs, doc_id, RUNNING)
    outcome, row = runs.claim(run_id, "w1", LEASE_S)
    assert outcome is ClaimOutcome.CLAIMED and row["attempts"] == 2


def test_update_params_merges(runs, doc_id):
    run_id = new_run(runs, doc_id)
    runs.update_params(run_id, prompt={"prompt": "Once"})
    assert runs.get(run_id)["params"] == {"options": {}, "prompt": {"prompt": "Once"}}


def test_list_is_per_document_newest_first(runs, store):
    doc = store.create_document("list", "alice")["id"]
    other = store.create_document("other", "bob")["id"]
    ids = []
    for _ in range(3):
        ids.append(new_run(runs, doc))
        time.sleep(0.002)  # distinct created_at
    new_run(runs, other)
    listed = [r["id"] for r in runs.list(doc)]
    assert listed == ids[::-1]
    assert [r["id"] for r in runs.list(doc, limit=2)] == ids[::-1][:2]


def test_claim_racing_a_finish_does_not_resurrect_a_terminal_run(runs, doc_id):
    """The stale holder finishes the run just as a redelivered attempt claims it."""
    run_id = run_in(runs, doc_id, RUNNING)
    age_lease(runs, run_id, LEASE_S + 5)
    fired = []

    def finish_first(conn, cursor, statement, parameters, context, executemany):
        # just before the claim's UPDATE: the old holder (slow, not dead) finishes the run
        if not fired and statement.lstrip().upper().startswith("UPDATE AGENT_RUNS") and "attempts" in statement:
            fired.append(True)
            assert runs.finish(run_id, DONE, owner="w1", result={"by": "w1"})

    sa.event.listen(runs.engine, "before_cursor_execute", finish_first)
    try:
        outcome, _ = runs.claim(run_id, "w2", LEASE_S)
    finally:
        sa.event.remove(runs.engine, "before_cursor_execute", finish_first)
    assert fired
    assert runs.get(run_id)["status"] == DONE
    assert outcome is not ClaimOutcome.CLAIMED

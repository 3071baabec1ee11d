"""Unit tests of prompt building (``agents/prompts.py``) and of the run options' validation.

Properties, not wording: which text goes into the prompt and where, what the token budget is
(``continue`` and ``expand`` write at least half of ``max_tokens``), and which requests are refused.
"""

from __future__ import annotations

import pytest
from agents_support import migrated_store

from agents import Edit, InvalidTask, Mode, Task
from agents.prompts import CONTEXT_CHARS, RUN_SAMPLING, build_prompt, build_request
from collab import InvalidRequest

PERSONA = "You are a careful editor. Be brief and concrete."
BEFORE = ("The first paragraph is about rivers. Rivers flow to the sea.\n\n"
          "The second paragraph talks about the ocean. Its waves are ")
SELECTED = "The tide comes in twice a day"
CHAT_INSTRUCTION_TASKS = [Task.REWRITE, Task.MARGIN_NOTE, Task.EXPAND, Task.CONTRACT]


def build(task: Task, *, before: str = BEFORE, selected: str = SELECTED, options: dict | None = None,
          persona: str = PERSONA, run_id: str = "run-1"):
    if not task.needs_range:
        selected = ""
    return build_prompt(task, persona, before, selected, options or {}, run_id)


def user_message(prompt) -> str:
    users = [m for m in prompt.messages if m["role"] == "user"]
    assert len(users) == 1
    return users[0]["content"]


# -- tasks and modes ------------------------------------------------------------------------


def test_every_documented_task_parses():
    assert {t.value for t in Task} == {"continue", "rewrite", "margin_note", "expand", "contract", "define"}
    for t in Task:
        assert Task.parse(t.value) is t
    assert Task.parse("margin_notes") is Task.MARGIN_NOTE  # the agent panel's spelling


@pytest.mark.parametrize("bad", ["summarize", "", None, 3, "Continue"])
def test_unknown_task_is_an_invalid_request(bad):
    with pytest.raises(InvalidTask) as info:
        Task.parse(bad)
    assert isinstance(info.value, InvalidRequest) and info.value.http_status == 400


def test_modes_parse_and_default_to_suggest():
    assert Mode.parse("direct") is Mode.DIRECT
    assert Mode.parse("suggest") is Mode.SUGGEST
    assert Mode.parse(None) is Mode.SUGGEST
    assert Mode.parse("") is Mode.SUGGEST


@pytest.mark.parametrize("bad", ["replace", "DIRECT", 1])
def test_unknown_mode_is_an_invalid_request(bad):
    with pytest.raises(InvalidTask) as info:
        Mode.parse(bad)
    assert isinstance(info.value, InvalidRequest)


def test_only_continue_works_without_a_range():
    assert [t for t in Task if not t.needs_range] == [Task.CONTINUE]


def test_what_each_task_does_to_the_document():
    assert Task.CONTINUE.edit is Edit.INSERT  # at the anchor
    assert Task.REWRITE.edit is Edit.REPLACE
    assert Task.EXPAND.edit is Edit.REPLACE
    assert Task.CONTRACT.edit is Edit.REPLACE
    assert Task.DEFINE.edit is Edit.APPEND  # after the term
    assert Task.MARGIN_NOTE.edit is Edit.NOTE  # never the text itself


# -- token budget ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(Task), ids=str)
def test_default_budget(task):
    p = build(task)
    assert p.max_tokens == task.default_max_tokens > 0
    if task in (Task.CONTINUE, Task.EXPAND):
        assert p.min_tokens == p.max_tokens // 2  # README: half of max_tokens
    else:
        assert p.min_tokens == 0


@pytest.mark.parametrize("task", list(Task), ids=str)
def test_max_tokens_option_sets_the_budget(task):
    p = build(task, options={"max_tokens": 200})
    assert p.max_tokens == 200
    assert p.min_tokens == (100 if task in (Task.CONTINUE, Task.EXPAND) else 0)


@pytest.mark.parametrize("task", list(Task), ids=str)
def test_min_tokens_option_wins_and_is_capped_at_max(task):
    assert build(task, options={"max_tokens": 80, "min_tokens": 10}).min_tokens == 10
    assert build(task, options={"max_tokens": 80, "min_tokens": 0}).min_tokens == 0  # 0 is a value, not "unset"
    assert build(task, options={"max_tokens": 80, "min_tokens": 500}).min_tokens == 80
    assert build(task, options={"min_tokens": 500}).min_tokens == task.default_max_tokens


def test_temperature_and_seed():
    p = build(Task.CONTINUE)
    assert p.temperature == 0.7
    assert build(Task.CONTINUE, options={"temperature": 0}).temperature == 0.0
    assert build(Task.CONTINUE, options={"temperature": 1.5}).temperature == 1.5
    # a redelivered attempt of one run samples the same text; another run need not
    assert build(Task.REWRITE, run_id="abc").seed == build(Task.REWRITE, run_id="abc").seed
    assert build(Task.REWRITE, run_id="abc").seed != build(Task.REWRITE, run_id="abd").seed


@pytest.mark.parametrize("seed", [0, 7, 2**32, -5, 2**63 - 1, -(2**63)])
def test_seed_option_fixes_the_seed_whatever_the_run(seed):
    a = build(Task.CONTINUE, options={"seed": seed}, run_id="abc")
    b = build(Task.CONTINUE, options={"seed": seed}, run_id="xyz")
    assert a.seed == b.seed == seed  # 0 is a seed, not "unset"
    assert build_request(a.to_json(), []).params.seed == seed  # and it reaches the sampler


def test_seed_option_none_means_the_runs_own_seed():
    assert build(Task.REWRITE, options={"seed": None}, run_id="abc").seed == build(Task.REWRITE, run_id="abc").seed


def test_same_seed_same_draws_other_seed_other_draws():
    """What makes a seeded run reproducible: the frozen prompt's seed gives the sampler the same
    random stream (rng_for), whichever run or attempt asks; another seed gives another stream."""
    from inference.engines import rng_for

    def draws(seed: int, run_id: str) -> list[float]:
        params = build_request(build(Task.EXPAND, options={"seed": seed}, run_id=run_id).to_json(), []).params
        return list(rng_for(params).random(8))

    assert draws(42, "run-a") == draws(42, "run-b")
    assert draws(42, "run-a") != draws(43, "run-a")
    assert draws(-1, "run-a") != draws(1, "run-a")  # negative seeds are seeds of their own


def test_prompt_to_json_round_trips_every_field():
    p = build(Task.EXPAND, options={"max_tokens": 64, "temperature": 0.2})
    j = p.to_json()
    assert set(j) == {"prompt", "messages", "max_tokens", "min_tokens", "temperature", "seed"}
    assert (j["max_tokens"], j["min_tokens"], j["temperature"], j["seed"]) == (64, 32, 0.2, p.seed)
    assert j["messages"] == p.messages and j["prompt"] is None


# -- continue ---------------------------------------------------------------------------------


def test_continue_is_a_raw_completion_of_the_text_before_the_cursor():
    p = build(Task.CONTINUE)
    assert p.messages is None
    assert p.prompt == BEFORE  # the text up to the cursor, nothing after it, no instructions
    assert PERSONA not in p.prompt


def test_continue_keeps_only_the_last_context_chars():
    before = "".join(f"sentence {i}. " for i in range(1000))
    p = build(Task.CONTINUE, before=before)
    assert len(p.prompt) == CONTEXT_CHARS
    assert before.endswith(p.prompt)


@pytest.mark.parametrize("before", ["", "   \n\n  "])
def test_continue_on_an_empty_document_asks_for_an_opening(before):
    p = build(Task.CONTINUE, before=before)
    assert p.prompt is None
    assert p.messages[0] == {"role": "system", "content": PERSONA}
    assert user_message(p).strip()
    assert p.max_tokens == Task.CONTINUE.default_max_tokens
    # without a persona prompt there is no system message
    bare = build(Task.CONTINUE, before=before, persona="")
    assert [m["role"] for m in bare.messages] == ["user"]


# -- the chat tasks ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", CHAT_INSTRUCTION_TASKS, ids=str)
def test_range_task_sends_the_selection_under_the_persona(task):
    p = build(task)
    assert p.prompt is None
    assert p.messages[0] == {"role": "system", "content": PERSONA}
    assert [m["role"] for m in p.messages] == ["system", "user"]
    user = user_message(p)
    assert user.endswith(SELECTED)  # the instruction first, then the selection, verbatim
    assert len(user) > len(SELECTED) + 10  # with an instruction
    assert "rivers" not in user.lower()  # text outside the selection stays out


@pytest.mark.parametrize("task", CHAT_INSTRUCTION_TASKS, ids=str)
def test_range_task_without_persona_has_no_system_message(task):
    p = build(task, persona="")
    assert [m["role"] for m in p.messages] == ["user"]


def test_each_range_task_has_its_own_instruction():
    instructions = {t: user_message(build(t)).replace(SELECTED, "") for t in CHAT_INSTRUCTION_TASKS}
    assert len(set(instructions.values())) == len(CHAT_INSTRUCTION_TASKS)


def test_selection_is_kept_whole_and_verbatim():
    selected = "  Line one,\nline \"two\" — with ünïcode and {braces}  "
    for task in CHAT_INSTRUCTION_TASKS:
        assert selected in user_message(build(task, selected=selected))


def test_define_names_the_term_and_quotes_its_sentence():
    before = "Rivers flow to the sea. Most of the sea floor is covered by "
    term = "abyssal plains"
    user = user_message(build(Task.DEFINE, before=before, selected=term))
    assert f'"{term}"' in user
    assert "Most of the sea floor is covered by abyssal plains" in user  # the sentence it is used in
    assert "Rivers flow" not in user  # only that sentence
    assert build(Task.DEFINE, before=before, selected=term).messages[0]["content"] == PERSONA


def test_define_strips_the_term_and_looks_back_at_most_300_chars():
    before = "x" * 1000 + " and then the "
    user = user_message(build(Task.DEFINE, before=before, selected=" jargon "))
    assert '"jargon"' in user
    assert "x" * 300 not in user and "x" * 250 in user


# -- the inference request --------------------------------------------------------------------


def test_build_request_from_a_frozen_prompt():
    from inference import GenerationRequest

    completion = build_request(build(Task.CONTINUE).to_json(), [])
    assert isinstance(completion, GenerationRequest)
    assert completion.prompt == BEFORE and not completion.messages
    grace = RUN_SAMPLING.grace_tokens  # the budget is 48; a few more may end the sentence
    assert completion.params.max_tokens == 48 + grace and completion.params.min_tokens == 24
    assert completion.params.dry_multiplier > 0 and completion.params.min_p > 0  # the loop-avoiding samplers
    assert completion.params.seed == build(Task.CONTINUE).seed
    chat = build_request(build(Task.REWRITE).to_json(), [])
    assert chat.messages == build(Task.REWRITE).messages and chat.prompt is None


def test_build_request_clamps_the_budget():
    frozen = build(Task.EXPAND).to_json()
    grace = RUN_SAMPLING.grace_tokens
    r = build_request({**frozen, "max_tokens": 5000, "min_tokens": 4000}, [])
    assert r.params.max_tokens == 512 + grace and r.params.min_tokens == 512
    r = build_request({**frozen, "max_tokens": 0, "min_tokens": 0}, [])
    assert r.params.max_tokens == 1 + grace
    r = build_request({k: v for k, v in frozen.items() if k != "min_tokens"}, [])  # frozen before min_tokens
    assert r.params.min_tokens == 0


# -- run options validation (AgentService.create_run) -----------------------------------------


@pytest.fixture
def service(tmp_path):
    """An ``AgentService`` on a real database; the hub it serves is a stand-in that only answers
    ``document_state`` (an empty document) — validation happens before anything is queued."""
    from agents import AgentService
    from collab import Settings

    store = migrated_store(tmp_path / "agents.db")

    class StandInHub:
        def __init__(self) -> None:
            self.settings = Settings(data_dir=tmp_path, db=store.url)
            self.store = store
            self.rooms = None

        async def document_state(self, doc_id):
            return None, 0

    svc = AgentService(StandInHub())
    svc.personas.ensure_shipped()
    svc.doc_id = store.create_document("d", "alice")["id"]
    yield svc
    store.close()


def _requester():
    from collab import Identity, Role

    return Identity("alice", "Alice", Role.EDITOR, None)


@pytest.mark.parametrize("options,message", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 513}, "max_tokens"),
    ({"max_tokens": "48"}, "max_tokens"),
    ({"max_tokens": 48.0}, "max_tokens"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"max_tokens": 40, "min_tokens": 41}, "min_tokens"),
    ({"min_tokens": 1.5}, "min_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    # JSON booleans are not numbers, though Python's bool is an int
    ({"max_tokens": True}, "max_tokens"),
    ({"min_tokens": False}, "min_tokens"),
    ({"temperature": True}, "temperature"),
    ({"seed": True}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"seed": 7.0}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
], ids=repr)
async def test_bad_options_are_refused(service, options, message):
    with pytest.raises(InvalidRequest, match=message):
        await service.create_run(service.doc_id, {"agent": "plain", "task": "continue", "options": options},
                                 _requester())
    assert service.runs.list(service.doc_id) == []  # nothing recorded, nothing queued


@pytest.mark.parametrize("body,error", [
    ({"agent": "plain", "task": "summarize"}, InvalidTask),
    ({"agent": "plain", "task": "continue", "mode": "loud"}, InvalidTask),
    ({"agent": "plain", "task": "rewrite"}, InvalidTask),  # a range task without a range
    ({"agent": "plain", "task": "continue", "options": ["max_tokens"]}, InvalidRequest),
    ({"agent": "", "task": "continue"}, InvalidRequest),
], ids=repr)
async def test_bad_run_requests_are_refused(service, body, error):
    with pytest.raises(error):
        await service.create_run(service.doc_id, body, _requester())
    assert service.runs.list(service.doc_id) == []



async def test_good_options_are_recorded_for_the_worker(service):
    options = {"max_tokens": 32, "min_tokens": 0, "temperature": 0, "seed": 2**63 - 1}
    row = await service.create_run(service.doc_id, {"agent": "plain", "task": "continue", "options": options},
                                   _requester())
    (stored,) = service.runs.list(service.doc_id)
    assert stored["id"] == row["id"]
    assert service.runs.get(row["id"])["params"]["options"] == options  # the worker builds its prompt from these

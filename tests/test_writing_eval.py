"""``tinymorph eval writing`` in small: the judge passes every human-written continuation and
fails degenerate or off-topic text; one real ``continue`` run goes through the run path and is
judged. The full evaluation (every shipped persona, every opening, several seeds) is the command."""

from __future__ import annotations

import re

import pytest

from agents.personas import SHIPPED
from agents.writing_eval import Judge, continue_opening, degeneracy, evaluate, judge_humans, load_openings, table

pytestmark = pytest.mark.model  # MiniLM and the bundled model: not in `make test-fast`

OPENINGS = load_openings()


@pytest.fixture(scope="module")
def judge():
    return Judge(OPENINGS)


def test_the_set_is_big_enough_and_the_judge_passes_every_human_continuation(judge):
    assert len(OPENINGS) >= 10 and len({o.id for o in OPENINGS}) == len(OPENINGS)
    assert {o.kind for o in OPENINGS} == {"story", "essay"}
    verdicts = judge_humans(judge)
    assert [(o.id, v.reasons) for o, v in verdicts if v.bad] == []


@pytest.mark.parametrize("text, reason", [
    ("12. 12. The first 12 were 12. The second 12 were 12.", "not prose"),  # from the issue
    ("She had seen the sea, and she had seen the sun. She had seen the stars, and she had seen the sea. "
     "She had seen the sea, and she had seen the sun.", "repeats itself"),
    ("#harbour #boats #sea #morning #pier #mara #fishing #storm", "markup"),
    ("1. Count the boats.\n2. Walk the pier.\n3. Wait for the storm to pass by the harbour.", "a list"),
    ("The boats.", "too short"),
    ("Assistant: Sure! Here is a continuation of your story about the harbour and the boats.", "chat residue"),
    ("and Mara walked along the pier, counting the boats that had not come back again and again.", "copies the opening"),
])
def test_degenerate_text_fails(judge, text, reason):
    v = judge.judge("harbour", text)
    assert v.bad and any(r.startswith(reason) for r in v.reasons), v


def test_a_continuation_of_another_opening_is_off_topic(judge):
    """Every human continuation, judged as if it continued the opening six places on: far-apart
    topics, so the own opening of the text is closest, not the one it is judged against."""
    n = len(OPENINGS)
    verdicts = judge.judge_many([(OPENINGS[(i + n // 2) % n].id, o.human) for i, o in enumerate(OPENINGS)])
    assert all(v.reasons == ("off topic",) for v in verdicts), verdicts
    assert degeneracy(OPENINGS[0].human, OPENINGS[0].opening) == []


def test_one_real_run_through_the_run_path_is_judged(judge):
    from inference_support import inference

    editor = next(p for p in SHIPPED if p.id == "editor")
    opening = OPENINGS[0]
    text = continue_opening(inference().engine(None), editor, opening, seed=0)
    assert text == continue_opening(inference().engine(None), editor, opening, seed=0)  # seeded: reproducible
    assert re.search(r"[.!?…][\"'”’)\]]*$", text), text  # cut at a sentence boundary
    report = evaluate(inference(), [editor], [opening], [0], judge=judge)
    (sample,) = report.samples
    assert sample.text == text and sample.verdict is not None and sample.nll is not None and 0 < sample.nll < 10
    rows = {r[0]: r for r in table(report)}
    assert rows["editor"][1] == f"{int(sample.verdict.bad)}/1" and rows["(human)"][1] == f"0/{len(OPENINGS)}"

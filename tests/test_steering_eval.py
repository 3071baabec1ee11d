"""``tinymorph eval steering`` (inference/steering/axbench.py): the concept set, the judge on texts
it was not calibrated on, the scores' arithmetic, the CLI's refusals, and a tiny run on the real
model (the SAE methods' tiny run is in test_sae_toolkit.py, which trains an SAE)."""

from __future__ import annotations

import json

import pytest

from inference.steering.axbench import CONCEPTS, ConceptSet, ConceptSetError, EvalConfig, Row, Steer, summarize
from inference.steering.axbench_judge import Judge, harmonic_mean, repetition

pytestmark = pytest.mark.model  # MiniLM, and the bundled model for the tiny run

#: Texts about a concept, written for this test (not the judge's references).
ABOUT = {
    "ocean": "We sailed across the rough sea for three days, the boat rolling over every wave.",
    "winter": "It snowed all week and the lake froze; we skated on the ice in thick scarves.",
    "law": "The defendant stood as the judge read the verdict to the silent courtroom.",
    "computers": "I spent the night debugging the program until the code finally compiled.",
    "dogs": "Our puppy chewed my shoes and barked at the postman every single morning.",
    "cooking": "Grandma stirred the soup, tasted it, and added a pinch of salt and fresh basil.",
}
#: Texts about none of the set's concepts.
UNRELATED = ["The committee will vote on the new parking rules at the next meeting.",
             "She filled in the form, signed it and posted it on her way home.",
             "The report compares three approaches and recommends the second one."]


@pytest.fixture(scope="module")
def cs():
    return ConceptSet.load()


@pytest.fixture(scope="module")
def judge(cs):
    return cs.judge()


def test_the_shipped_set_is_as_the_issue_asks(cs):
    assert len(cs.eval) >= 16 and len(cs.eval_instructions) >= 3 and cs.tuning
    assert not {c.name for c in cs.eval} & {c.name for c in cs.tuning}  # no tuning on eval concepts
    assert not {i.text for i in cs.eval_instructions} & {i.text for i in cs.tuning_instructions}
    assert not set(cs.build_prompts) & {i.text for i in cs.eval_instructions + cs.tuning_instructions}


def test_a_broken_concept_set_is_refused_with_a_reason(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    with pytest.raises(ConceptSetError, match="not a concept set"):
        ConceptSet.load(bad)
    raw = json.loads(CONCEPTS.read_text())
    raw["tuning"].append(raw["eval"][0])
    bad.write_text(json.dumps(raw))
    with pytest.raises(ConceptSetError, match="unique"):
        ConceptSet.load(bad)


def test_judge_scores_texts_about_a_concept_high_and_others_low(judge):
    for name, text in ABOUT.items():
        mine = judge.score(name, "Describe a city street.", text, 0.0).concept
        others = [judge.score(o, "Describe a city street.", text, 0.0).concept for o in judge.concepts if o != name]
        assert mine >= 0.6, (name, mine)
        assert mine > max(others), (name, mine, max(others))
        assert sum(others) / len(others) < 0.15, (name, others)
    for text in UNRELATED:
        scores = [judge.score(c, "Describe a city street.", text, 0.0).concept for c in judge.concepts]
        # the same bound as a concept text's score on the other concepts (MiniLM puts "a report
        # compares approaches" near the technical concepts: one of these averages 0.13)
        assert max(scores) < 0.5 and sum(scores) / len(scores) < 0.15, (text, scores)


def test_judge_instruction_relevance_prefers_an_answer_to_the_instruction(judge):
    street = "Cars crawled along the avenue while people hurried past the shop windows and cafes."
    on = judge.score("ocean", "Describe a city street.", street, 0.0).instruction
    off = judge.score("ocean", "Write a short letter to your neighbour.", street, 0.0).instruction
    assert on >= 0.6 and off <= 0.2, (on, off)


def test_fluency_harmonic_mean_and_repetition_arithmetic(judge):
    fluent = "The old harbour was quiet, and a few boats rocked gently by the pier."
    assert judge.score("ocean", "Describe a city street.", fluent, 0.0).fluency == 1.0
    assert judge.score("ocean", "Describe a city street.", fluent, -0.4).fluency == 1.0  # better than baseline
    assert judge.score("ocean", "Describe a city street.", fluent, 1.0).fluency == pytest.approx(0.5)
    assert judge.score("ocean", "Describe a city street.", fluent, 3.0).fluency == 0.0
    assert judge.score("ocean", "Describe a city street.", "   ", 0.0).fluency == 0.0
    loop = "the sea the sea the sea the sea"
    assert repetition(loop) == pytest.approx(4 / 6)
    assert judge.score("ocean", "Describe a city street.", loop, 0.0).fluency == pytest.approx(1 - 4 / 6)
    assert repetition("one two") == 0.0
    assert harmonic_mean(1.0, 1.0, 1.0) == 1.0
    assert harmonic_mean(0.5, 1.0, 0.0) == 0.0  # AxBench: any zero is zero
    assert harmonic_mean(0.5, 1.0, 1.0) == pytest.approx(3 / 4)


def test_judge_needs_references_and_two_targets():
    class Flat:  # an embedder that would make every text the same
        def embed(self, texts):
            return [[1.0] + [0.0] * 383 for _ in texts], 0

    with pytest.raises(ValueError, match="reference"):
        Judge({"a": ("a", []), "b": ("b", ["x"])}, {"i": ["y"], "j": ["z"]}, Flat())
    with pytest.raises(ValueError, match="two"):
        Judge({"a": ("a", ["x"])}, {"i": ["y"], "j": ["z"]}, Flat())


def _row(method, harmonic, strength=None):
    return Row("eval", "ocean", "Describe a city street.", method, strength, 0, "t", 1.0, harmonic, harmonic,
               harmonic, 0.0, 0.0, harmonic, 0.0, 0.0)


def test_summary_says_whether_each_target_is_met_and_by_how_much():
    rows = [_row("unsteered", 0.0), _row("prompt", 0.5), _row("caa", 0.3, 0.2), _row("caa", 0.5, 0.2),
            _row("prompt+caa", 0.7, 0.1)]
    table, verdict = summarize(rows)
    assert [t["method"] for t in table] == ["prompt+caa", "prompt", "caa", "unsteered"]
    assert verdict["prompt"] == 0.5 and verdict["best_steering"] == {"method": "caa", "harmonic": 0.4}
    assert not verdict["steering_ge_prompt"] and verdict["steering_gap"] == pytest.approx(-0.1)
    assert verdict["prompt_plus_gt_prompt"] and verdict["prompt_plus_gap"] == pytest.approx(0.2)


@pytest.mark.parametrize("argv, message", [
    (["--methods", "caa,telepathy"], "--methods takes caa, sae-input, sae-output, psr"),
    (["--strengths", "0.1,lots"], "numbers separated by commas"),
    (["--strengths", "0,0.2"], "in (0, 8]"),
])
def test_cli_refuses_bad_arguments_with_a_reason(argv, message, capsys, tmp_path, monkeypatch):
    from collab.cli import main

    monkeypatch.setenv("TINYMORPH_DATA_DIR", str(tmp_path))
    assert main(["eval", "steering", "--sae", "none", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_an_unknown_sae_and_a_broken_concept_file(capsys, tmp_path, monkeypatch):
    from collab.cli import main

    monkeypatch.setenv("TINYMORPH_DATA_DIR", str(tmp_path))
    assert main(["eval", "steering", "--sae", "no-such-sae"]) == 2
    assert "no SAE 'no-such-sae'" in capsys.readouterr().err
    (tmp_path / "c.json").write_text("[]")
    assert main(["eval", "steering", "--sae", "none", "--concept-file", str(tmp_path / "c.json")]) == 2
    assert "not a concept set" in capsys.readouterr().err


def test_tiny_run_on_the_real_model(cs, tmp_path):
    from inference_support import inference

    from inference.steering import axbench as ab
    from inference.steering.axbench_report import save

    inf = inference()
    cfg = EvalConfig(steers=(Steer.CAA,), strengths=(0.1, 0.3), concepts=1, prompts_per_concept=1,
                     tuning_concepts=1, tuning_prompts=1, build_prompts=2, max_tokens=8, build_max_tokens=24)
    result = ab.run(inf, cfg, cs, progress=False)
    assert result.skipped == []
    assert [r.method for r in result.rows] == ["unsteered", "prompt", "caa", "prompt+caa"]
    assert {r.concept for r in result.rows} == {cs.eval[0].name}
    assert {r.concept for r in result.tuning} == {cs.tuning[0].name}  # strengths never see eval concepts
    assert len(result.tuning) == 2 + 2 * 2
    assert set(result.strengths) == {"caa", "prompt+caa"} and set(result.strengths.values()) <= {0.1, 0.3}
    for r in result.rows:
        if r.method in ("unsteered", "prompt"):
            assert r.nll_delta == 0 and r.strength is None  # their own baselines
        else:
            assert r.strength == result.strengths[r.method]
        assert 0 <= min(r.concept_score, r.instruction_score, r.fluency, r.harmonic) <= 1
    assert result.steering[0]["caa_norm"] > 0
    # the cache makes a second run generate nothing new and give the same texts
    again = ab.run(inf, cfg, cs, progress=False)
    assert [r.text for r in again.rows] == [r.text for r in result.rows]
    paths = save(result, tmp_path / "out")
    md = paths["md"].read_text()
    assert "| prompt |" in md and "Targets" in md
    assert json.loads(paths["json"].read_text())["verdict"]["prompt"] == summarize(result.rows)[1]["prompt"]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"

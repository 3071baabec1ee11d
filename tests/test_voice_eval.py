"""``tinymorph eval voice``, small: the real writer (seph-blog1), the real model, a few
paragraphs and openings, tiny calibration and PSR. The full run is ``tinymorph eval voice``
(its results: bench/results/voice.md); this checks every condition is built and measured."""

from __future__ import annotations

import pytest
from inference_support import inference

from agents.voice_eval import VoiceEvalConfig, evaluate
from collab.testing import load_trace
from inference.embeddings import Embedder
from inference.steering.calibration import CALIBRATION_OPENINGS, CalibrationConfig
from inference.steering.psr import PSRConfig

pytestmark = pytest.mark.model


@pytest.mark.timeout(600)
def test_a_small_voice_eval_measures_the_vector_the_in_context_psr_and_the_prompt():
    cfg = VoiceEvalConfig(n_build=3, n_writer=6, n_model_prompts=3, n_test=3, strengths=(0.1,), max_tokens=16,
                          name="test-voice",
                          calibration=CalibrationConfig(strengths=(0.05, 0.1), openings=CALIBRATION_OPENINGS[:2],
                                                        seeds=(0,), max_tokens=12),
                          psr=PSRConfig(n_texts=4, max_tokens=16, act_steps=50, kl_steps=4, batch=2))
    embedder = Embedder()
    rows, facts = evaluate(inference(), lambda texts: embedder.embed(list(texts))[0],
                           load_trace(cfg.trace)["endContent"], cfg, progress=False)
    conditions = [r.condition for r in rows]
    assert conditions[:2] == ["unsteered", "in context"] and "calibrated" in conditions
    assert conditions[-2:] == ["voice PSR"] * 2
    psr_rows = rows[-2:]
    assert psr_rows[1].strength == pytest.approx(2 * psr_rows[0].strength, abs=2e-3)  # rounded to 0.001
    assert psr_rows[1].strength == pytest.approx(facts["psr_trained_strength"], abs=1e-3)
    assert facts["psr_losses"]["kl_trained"] < facts["psr_losses"]["kl_unsteered"]
    for r in rows:
        assert 0 <= r.p_writer <= 1 and 0 <= r.degenerate <= 1 and len(r.samples) == 3
        assert 0 < r.p_writer_se < 0.5  # over n_test x samples continuations, not one
        assert 0 <= r.p_voice <= 1 and 0 < r.p_voice_se < 0.5  # the content-matched probe's
        assert 0 <= r.p_writer_fluent <= 1 and 0 <= r.p_voice_fluent <= 1
    assert facts["samples_per_opening"] == 2
    assert facts["p_writer_gain_in_context"] == pytest.approx(rows[1].p_writer - rows[0].p_writer)
    assert facts["n_test"] == 3 and 0.5 < facts["probe_train_accuracy"] <= 1
    assert 0.5 < facts["voice_probe_train_accuracy"] <= 1
    assert facts["p_voice_gain_in_context"] == pytest.approx(rows[1].p_voice - rows[0].p_voice)
    # the calibrated gain, paired continuation by continuation: the same mean, its own error
    at = next(r for r in rows if r.condition == "calibrated")
    assert all(len(r.p_each) == len(r.p_voice_each) == 6 for r in rows)
    assert facts["p_voice_gain_at_calibrated"] == pytest.approx(at.p_voice - rows[0].p_voice)
    assert facts["p_voice_gain_at_calibrated_se"] >= 0 and facts["p_writer_gain_at_calibrated_se"] >= 0
    assert [p["strength"] for p in facts["calibration_points"]][:2] == [0.0, 0.05]

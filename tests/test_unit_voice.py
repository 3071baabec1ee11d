"""The pieces of ``tinymorph eval voice`` that need no model: the probe and the corpus split."""

from __future__ import annotations

import numpy as np
import pytest

from agents.voice_eval import LogisticProbe, VoiceEvalConfig, opening_of, plot, split_corpus


def test_the_probe_separates_what_is_separable_and_not_what_is_not():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1, (80, 16)), rng.normal(-0.3, 1, (80, 16))
    x, y = np.vstack([a, b]), np.r_[np.ones(80), np.zeros(80)]
    probe = LogisticProbe().fit(x, y)
    assert ((probe.prob(x) > 0.5) == (y > 0.5)).mean() > 0.85
    noise = rng.normal(0, 1, (200, 16))
    assert abs(probe.prob(noise[:100]).mean() - probe.prob(noise[100:]).mean()) < 0.1  # no class in noise
    y_shuffled = rng.permutation(y)
    held_out = LogisticProbe().fit(x[::2], y_shuffled[::2]).prob(x[1::2])
    assert ((held_out > 0.5) == (y_shuffled[1::2] > 0.5)).mean() < 0.7  # labels without signal: chance


def test_the_corpus_splits_into_disjoint_parts_the_same_way_every_time():
    cfg = VoiceEvalConfig(min_chars=10, n_build=3, n_writer=4, n_model_prompts=2, n_test=2)
    text = "\n".join(f"Paragraph number {i} says something long enough." for i in range(20)) + "\nshort"
    parts = split_corpus(text, cfg)
    assert [len(parts[k]) for k in ("build", "writer", "model", "test")] == [3, 4, 2, 2]
    everything = [p for ps in parts.values() for p in ps]
    assert len(set(everything)) == len(everything) and "short" not in everything
    assert split_corpus(text, cfg) == parts
    with pytest.raises(ValueError, match="paragraphs"):
        split_corpus(text, VoiceEvalConfig(min_chars=10, n_build=30))


def test_an_opening_is_the_first_sentence_at_most_twelve_words():
    assert opening_of("Short one. Then more.") == "Short one"
    assert len(opening_of(" ".join(["word"] * 40) + ".").split()) == 12


def test_the_rows_become_a_picture(tmp_path):
    """``--json F`` writes F.png beside it: both probes per condition, the writer's own level, the judge."""
    pytest.importorskip("matplotlib")
    rows = [{"condition": c, "strength": s, "p_writer": p, "p_writer_se": 0.02, "p_voice": v, "p_voice_se": 0.02,
             "degenerate": d} for c, s, p, v, d in (("unsteered", 0.0, 0.41, 0.46, 0.19),
                                                     ("calibrated", 0.1, 0.42, 0.52, 0.19))]
    facts = {"writer_test_p": 0.73, "writer_test_p_voice": 0.56, "n_test": 16, "trace": "t", "calibrated_strength": 0.1}
    out = plot({"rows": rows, "facts": facts}, tmp_path / "voice.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


@pytest.mark.parametrize("bad", ["0", "-2", "17", "two", "1.5"])
def test_eval_voice_refuses_a_bad_sample_count(bad, capsys):
    """``--samples`` is checked before anything loads: a clear usage error, exit status 2."""
    import argparse

    from agents.voice_eval import register

    parser = argparse.ArgumentParser(prog="tinymorph")
    register(parser.add_subparsers())
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["eval", "voice", "--samples", bad])
    assert exc.value.code == 2 and "--samples" in capsys.readouterr().err
    assert parser.parse_args(["eval", "voice", "--samples", "4"]).samples == 4

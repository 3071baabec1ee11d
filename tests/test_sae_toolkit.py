"""SAE toolkit on the real model: a tiny TopK SAE trained here with sae-lens in seconds, then
evaluation, features, self-explanation, decomposition, the steering eval and /api/sae."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from inference_support import inference
from starlette.applications import Starlette
from starlette.testclient import TestClient

from inference import SAETrainingError, UnknownFeature
from inference.sae.api import routes
from inference.sae.catalog import SAECatalog
from inference.sae.corpus import WRITING_PROMPTS, build_corpus
from inference.sae.train import TrainConfig, train

pytestmark = pytest.mark.model  # not in `make test-fast`

CFG = TrainConfig(layer=10, d_sae=256, k=8, tokens=24_576, batch_size=128, checkpoints=2)
SAE_ID = "test-tiny-L10"


@pytest.fixture(scope="module")
def tiny():
    """A corpus of 4 self-written answers + reference-style text, and an SAE trained on it."""
    inf = inference()
    corpus = build_corpus(inf, n_samples=1, max_tokens=40, prompts=WRITING_PROMPTS[:4], progress=False)
    corpus.texts += ["The sea was calm and the ships sailed slowly into the harbour at dawn.",
                     "She was furious, shouting at everyone who came near the broken door.",
                     "We cooked a delicious soup with carrots, onions and fresh bread."] * 2
    corpus.sources += ["doc:test"] * 6
    result = train(inf, CFG, corpus=corpus, progress=False, sae_id=SAE_ID, resume=False)
    return inf, result, corpus


def test_corpus_takes_the_workspace_documents_it_is_given(tiny):
    inf = inference()
    docs = [("d1", "A first paragraph.\n\nA second one."), ("d2", "Only one here.")]
    # the self-written part is the fixture's, from the cache: nothing is generated again
    corpus = build_corpus(inf, n_samples=1, max_tokens=40, prompts=WRITING_PROMPTS[:4], progress=False,
                          documents=lambda: iter(docs))
    assert corpus.texts[:3] == ["A first paragraph.", "A second one.", "Only one here."]
    assert corpus.sources[:3] == ["doc:d1", "doc:d1", "doc:d2"]
    assert corpus.provenance()["documents"] == 2
    alone = build_corpus(inf, n_samples=1, max_tokens=40, prompts=WRITING_PROMPTS[:4], progress=False)
    assert alone.texts == corpus.texts[3:] and not any(s.startswith("doc:") for s in alone.sources)


def test_training_saves_saelens_format_and_registers(tiny):
    inf, result, corpus = tiny
    cfg = json.loads((result.folder / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 8 and cfg["d_sae"] == 256
    assert cfg["metadata"]["hook_name"] == "blocks.10.hook_resid_post"
    sae = inf.saes.get(SAE_ID)
    assert sae.layer == 10 and sae.d_in == 576
    assert np.allclose(np.linalg.norm(sae.W_dec, axis=1), 1, atol=1e-4)  # folded: steering-ready
    row = SAECatalog(inf.config.database_url).get(SAE_ID)
    assert row["status"] == "ready" and row["tokens_trained"] >= CFG.tokens
    assert row["provenance"]["corpus"]["texts"] == len(corpus.texts)
    # checkpoints are not listed as SAEs
    assert [i for i in inf.saes.ids() if i.startswith(SAE_ID)] == [SAE_ID]


def test_training_resumes_from_a_checkpoint_and_skips_when_done(tiny):
    inf, result, _ = tiny
    again = train(inf, CFG, progress=False, sae_id=SAE_ID)
    assert again.skipped
    # simulate a crash after the last checkpoint: the final weights are gone
    copy = "test-tiny-resume"
    shutil.copytree(result.folder, inf.saes.folder(copy))
    shutil.copytree(inf.data_dir / "sae" / "checkpoints" / SAE_ID, inf.data_dir / "sae" / "checkpoints" / copy)
    (inf.saes.folder(copy) / "sae_weights.safetensors").unlink()
    resumed = train(inf, CFG, progress=False, sae_id=copy)
    assert 0 < resumed.resumed_from < CFG.tokens and resumed.tokens >= CFG.tokens
    assert (inf.saes.folder(copy) / "sae_weights.safetensors").exists()
    with pytest.raises(SAETrainingError):  # same id, other configuration
        train(inf, TrainConfig(layer=10, d_sae=128, k=8, tokens=4096, batch_size=128),
              progress=False, sae_id=copy)


@pytest.fixture(scope="module")
def evaluated(tiny):
    from inference.sae.eval import evaluate

    return evaluate(tiny[0], SAE_ID)


def test_eval_metrics_are_sane(tiny, evaluated):
    r = evaluated
    assert r.l0 == pytest.approx(8, abs=0.01)  # TopK: exactly k latents (ties aside)
    # reconstructs better than the mean would (FVU 1): measured 0.887 (a 256-latent SAE trained
    # on 24k tokens, seeded); 0.95 leaves room for another machine's float rounding, not for an
    # SAE no better than the mean
    assert 0 < r.fvu < 0.95
    assert r.ce_clean < r.ce_sae < r.ce_zero  # a lossy but useful substitute
    assert 0 < r.ce_recovered < 1
    assert 0 <= r.dead < r.d_sae
    density = np.load(tiny[1].folder / "eval" / "density.npy")
    assert int((density == 0).sum()) == r.dead
    png = tiny[1].folder / "eval" / "density.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SAECatalog(tiny[0].config.database_url).get(SAE_ID)["metrics"]["l0"] == r.l0


def test_text_features_index_search_and_self_explanation(tiny):
    from inference.sae.explain import FeatureIndex, self_explain, text_features

    inf = tiny[0]
    tf = text_features(inf, SAE_ID, "The sea was calm and the ships sailed slowly.", top=5)
    assert tf.tokens[1] == " sea" and 0 < len(tf.top) <= 5
    top = tf.top[0]
    assert len(top["acts"]) == len(tf.tokens) and top["acts"][0] == 0
    assert max(top["acts"]) == pytest.approx(top["max"], abs=1e-3)
    index = FeatureIndex(inf, SAE_ID)
    f = index.feature(top["feature"])
    assert f["max_activation"] >= top["max"] - 1e-3  # that sentence is in the corpus
    assert f["examples"] and f["label"] != "(no activations)"
    ex = f["examples"][0]
    assert ex["acts"][ex["at"]] == pytest.approx(ex["max"], abs=1e-3) and ex["max"] == f["max_activation"]
    hits = index.search("ships at sea", limit=5)
    assert len(hits) == 5 and hits[0][1] >= hits[-1][1]
    with pytest.raises(UnknownFeature):
        index.feature(256)
    scales = (0.5, 1.0, 2.0, 4.0)
    se = self_explain(inf, SAE_ID, top["feature"], scales=scales)
    assert len(se.similarity) == len(se.entropy) == len(se.composite) == 4
    assert all(-1 <= s <= 1 for s in se.similarity) and all(0 <= h <= np.log(49152) for h in se.entropy)
    assert se.best_scale == scales[int(np.argmax(se.composite))]  # the recommended scale scores best
    assert se.explanation.strip()
    # the score rewards both: with alpha = 1 it ranks the scales as the similarity does, with
    # alpha = 0 as the entropy does, lowest first (a model that knows what to say); in between, a
    # scale at least as good on both scores at least as well
    by_sim = self_explain(inf, SAE_ID, top["feature"], scales=scales, alpha=1.0)
    by_ent = self_explain(inf, SAE_ID, top["feature"], scales=scales, alpha=0.0)
    assert list(np.argsort(by_sim.composite)) == list(np.argsort(by_sim.similarity))
    assert list(np.argsort(by_ent.composite)) == list(np.argsort(-np.array(by_ent.entropy)))
    for i in range(4):
        for j in range(4):
            if se.similarity[i] >= se.similarity[j] and se.entropy[i] <= se.entropy[j]:
                assert se.composite[i] >= se.composite[j], (i, j, se)


def test_decompose_caa_vector_and_downstream(tiny):
    from inference.sae.decompose import decompose, downstream

    inf = tiny[0]
    d = decompose(inf, "formal", SAE_ID, top=5)  # shipped vector, layer 10
    cos = [abs(f["cosine"]) for f in d["by_cosine"]]
    assert cos == sorted(cos, reverse=True) and 0 < cos[0] <= 1
    assert 0 <= d["variance_explained_by_top_cosine"] <= 1
    down = downstream(inf, "formal", "Tell me about your weekend.", strength=0.5, top=3)
    mine = next(s for s in down["saes"] if s["sae_id"] == SAE_ID)
    assert mine["layer"] == 10 and abs(mine["changes"][0]["delta"]) > 0


def test_steering_eval_tiny(tiny):
    """The SAE methods of ``tinymorph eval steering`` (the rest: test_steering_eval.py)."""
    from inference.steering import axbench as ab
    from inference.steering.axbench_report import save

    inf = tiny[0]
    cs = ab.ConceptSet.load()
    cfg = ab.EvalConfig(SAE_ID, steers=(ab.Steer.SAE_INPUT, ab.Steer.SAE_OUTPUT), strengths=(0.5,), concepts=1,
                        prompts_per_concept=1, tuning_concepts=1, tuning_prompts=1, build_prompts=2, candidates=3,
                        max_tokens=8, build_max_tokens=24)
    result = ab.run(inf, cfg, cs, progress=False)
    assert [r.method for r in result.rows] == ["unsteered", "prompt", "sae-input", "prompt+sae-input",
                                               "sae-output", "prompt+sae-output"]
    steering = next(s for s in result.steering if s["concept"] == cs.eval[0].name)
    cands = steering["sae_candidates"]
    assert 1 <= len(cands) <= 3 and steering["layer"] == 10
    # input-chosen: the largest rise in activation; output-chosen: the best output score among the candidates
    assert steering["sae_input"] == max(cands, key=lambda c: c["input"])["feature"]
    assert steering["sae_output"] == max(cands, key=lambda c: c["output"])["feature"]
    for r in result.rows:
        if r.method.endswith("sae-input") or r.method.endswith("sae-output"):
            assert r.strength == 0.5
    paths = save(result, tiny[1].folder / "eval")
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_api(tiny, evaluated):
    inf = tiny[0]
    app = Starlette(routes=routes)
    app.state.inference = inf
    c = TestClient(app)
    assert SAE_ID in [s["id"] for s in c.get("/api/sae").json()["saes"]]
    feats = c.get("/api/sae/features", params={"q": "ships at sea", "sae": SAE_ID, "limit": 3}).json()["features"]
    assert len(feats) == 3
    fid = feats[0]["id"]
    assert fid.startswith(f"{SAE_ID}#") and len(feats[0]["recommended"]) == 2
    sid, n = fid.split("#")
    card = c.get(f"/api/sae/{sid}/features/{n}").json()
    assert card["id"] == fid and card["examples"] and card["scores"]["best_scale"] > 0
    assert card["recommended"][0] < card["recommended"][1]
    assert c.get(f"/api/sae/{sid}/features/999").status_code == 404
    assert c.get("/api/sae/features", params={"sae": "nope"}).status_code == 404
    assert c.get(f"/api/sae/{sid}/plots/density.png").headers["content-type"] == "image/png"
    assert c.get(f"/api/sae/{sid}/eval").json()["eval"]["l0"] == pytest.approx(8, abs=0.01)


def test_feature_calibration_is_the_one_guide(tiny):
    """A feature calibrated on the fluency ladder (its own activation as the concept score) has
    that guide stored with the SAE, and it is what search, the card and a steering term without
    ``strength`` use; before, each of them followed the typical activation."""
    from inference.sae.calibrate import calibrate_feature
    from inference.steering.calibration import CALIBRATION_OPENINGS, CalibrationConfig
    from inference.steering.spec import SteeringSpec, resolve

    inf = tiny[0]
    model = inf.torch_engine().info
    c = TestClient(Starlette(routes=routes))
    c.app.state.inference = inf
    fid = c.get("/api/sae/features", params={"q": "ships at sea", "sae": SAE_ID, "limit": 1}).json()["features"][0]["id"]
    feature = int(fid.split("#")[1])
    assert inf.saes.feature_guide(SAE_ID, feature, model).basis.startswith("not calibrated")

    cfg = CalibrationConfig(strengths=(0.1, 0.4), openings=CALIBRATION_OPENINGS[:2], seeds=(0,), max_tokens=16)
    guide, points = calibrate_feature(inf, SAE_ID, feature, cfg)
    assert [p.strength for p in points][:2] == [0.0, 0.1] and guide.basis.startswith("calibrated")
    # the feature's activation was read, and steering raised it: at some rung, not always the
    # first (a feature whose encoder bias is negative reads 0 until the push is large enough)
    assert max(p.concept for p in points[1:]) > points[0].concept, [(p.strength, p.concept) for p in points]
    assert inf.saes.feature_guide(SAE_ID, feature, model) == guide

    hit = [h for h in c.get("/api/sae/features", params={"q": "ships at sea", "sae": SAE_ID, "limit": 100}).json()[
        "features"] if h["id"] == fid][0]
    card = c.get(f"/api/sae/{SAE_ID}/features/{feature}", params={"explain": "0"}).json()
    for served in (hit, card):
        assert (served["default_strength"], served["recommended"]) == (guide.default, [guide.low, guide.high])
    ivs = resolve(SteeringSpec.from_json([{"source": f"sae:{fid}"}]), model, inf.library).interventions
    assert ivs[0].scale == pytest.approx(guide.default * model.layer_norms[ivs[0].layer])

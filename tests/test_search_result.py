"""A search's folder and its resume rules (hat_ray.search.result): what changes a resume refuses
(every input the scores depend on, named) and what it accepts (resources); the typed result."""

from __future__ import annotations

import json
import math

import pytest
from search_helpers import FakePredictor, random_batches, tiny_space, tiny_super, write_fake_predictor

from hat_ray.errors import DataError, HatRayError
from hat_ray.latency.predictor import LatencyPredictor
from hat_ray.search.constraints import Constraint, Constraints
from hat_ray.search.result import CONFIG, SearchFolder, SearchResult, resume_changes
from hat_ray.search.run import SearchOptions
from hat_ray.search.scorer import pack_batches, pack_weights
from hat_ray.summary import arch_summary

ENGINE = dict(population=10, parents=4, mutations=4, crossovers=2, iterations=3)
INFO = {"supernet": "super.pt", "data": "synthetic", "valid_sentences": 40, "max_tokens": 4096}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_fake_predictor(root / "a.pred", seed=0)
    write_fake_predictor(root / "b.pred", seed=1)  # another fit: other contents
    (root / "a_copy.pred").write_bytes((root / "a.pred").read_bytes())
    return {"weights": pack_weights(tiny_super(0)), "batches": pack_batches(random_batches()), "root": root}


def _fp(inputs, options=None, weights=None, batches=None, limit=30.0, margin=0.0, predictor="a.pred", info=None):
    options = options or SearchOptions(algorithm="hat", scorers=2, seed=1, engine_kwargs=dict(ENGINE))
    pred = LatencyPredictor.load(inputs["root"] / predictor)
    constraints = Constraints([Constraint("fake", limit, pred, margin)])
    return options.fingerprint(weights or inputs["weights"], batches or inputs["batches"], constraints,
                               {**INFO, **(info or {})})


def test_resources_may_change_on_resume(inputs):
    saved = _fp(inputs)
    other = SearchOptions(algorithm="hat", scorers=5, seed=1, threads_per_scorer=3, use_gpu=True, measure_top=4,
                          engine_kwargs=dict(ENGINE))
    assert resume_changes(saved, _fp(inputs, options=other)) == []
    # the same predictor contents under another path, the supernet under another path: accepted
    moved = _fp(inputs, predictor="a_copy.pred", info={"supernet": "elsewhere/super.pt"})
    assert resume_changes(saved, moved) == []


@pytest.mark.parametrize("change, needle", [
    ({"info": {"data": "multi30k"}}, "--data was synthetic, now multi30k"),
    ({"info": {"valid_sentences": 50}}, "--valid-sentences was 40, now 50"),
    ({"info": {"max_tokens": 512}}, "--max-tokens (the scoring batch) was 4096, now 512"),
    ({"margin": 1.0}, "--margin on fake was 0.0, now 1.0"),
    ({"limit": 25.0}, "the fake limit was 30.0 ms, now 25.0 ms"),
    ({"predictor": "b.pred"}, "the predictor for fake changed"),
    ({"options": SearchOptions(algorithm="hat", seed=2, engine_kwargs=dict(ENGINE))}, "--seed was 1, now 2"),
    ({"options": SearchOptions(algorithm="hat", seed=1, budget=9, engine_kwargs=dict(ENGINE))},
     "--budget was None, now 9"),
    ({"options": SearchOptions(algorithm="hat", seed=1, engine_kwargs={**ENGINE, "mutation_prob": 0.5})},
     "--mutation-prob was None, now 0.5"),
    ({"weights": "other"}, "the SuperTransformer's weights differ"),
    ({"batches": "other"}, "the validation batches differ"),
])
def test_changes_that_alter_scores_are_refused_by_name(inputs, change, needle):
    saved = _fp(inputs)
    if change.get("weights") == "other":
        change = {"weights": pack_weights(tiny_super(1))}
    if change.get("batches") == "other":
        change = {"batches": pack_batches(random_batches(seed=1))}
    changes = resume_changes(saved, _fp(inputs, **change))
    assert len(changes) == 1 and needle in changes[0], changes


def test_folder_refuses_a_changed_resume_in_one_line_and_keeps_the_record(inputs, tmp_path):
    folder = SearchFolder(tmp_path / "s")
    folder.check(resume=False)
    folder.check_resume(_fp(inputs), resume=False)
    saved = (tmp_path / "s" / CONFIG).read_text()
    with pytest.raises(HatRayError) as info:
        folder.check_resume(_fp(inputs, margin=1.0, info={"max_tokens": 100}), resume=True)
    msg = str(info.value)
    assert "\n" not in msg and "--margin on fake" in msg and "--max-tokens" in msg and "new --out" in msg
    assert (tmp_path / "s" / CONFIG).read_text() == saved  # a refused resume changes nothing
    more = SearchOptions(algorithm="hat", scorers=7, seed=1, engine_kwargs=dict(ENGINE))
    folder.check_resume(_fp(inputs, options=more), resume=True)  # accepted: the new resources are recorded
    assert json.loads((tmp_path / "s" / CONFIG).read_text())["resources"]["scorers"] == 7


def test_legacy_search_config_resumes_on_its_own_terms(inputs, tmp_path):
    """A search folder from before fingerprints: engine options, supernet path and devices compared;
    the scorers it ran with are not."""
    out = tmp_path / "old"
    out.mkdir()
    old = {"options": {"algorithm": "hat", "budget": None, "scorers": 2, "seed": 1, "threads_per_scorer": 1,
                       "scorer_cpus": 1.0, "use_gpu": False, "engine_kwargs": dict(ENGINE)},
           "supernet": "super.pt", "devices": [["fake", 30.0]]}
    (out / CONFIG).write_text(json.dumps(old))
    SearchFolder(out).check_resume(_fp(inputs, options=SearchOptions(algorithm="hat", scorers=4, seed=1,
                                                                      engine_kwargs=dict(ENGINE))), resume=True)
    assert json.loads((out / CONFIG).read_text()) == old  # kept as written
    with pytest.raises(HatRayError, match="seed was 1, now 3"):
        SearchFolder(out).check_resume(_fp(inputs, options=SearchOptions(algorithm="hat", seed=3,
                                                                          engine_kwargs=dict(ENGINE))), resume=True)


def test_folder_states_and_typed_result(tmp_path):
    folder = SearchFolder(tmp_path / "s")
    assert not folder.started and not folder.finished
    with pytest.raises(DataError, match="holds no search"):
        folder.load()
    folder.out.mkdir()
    folder.log_path.write_text("")
    assert folder.started and not folder.finished
    with pytest.raises(HatRayError, match="pass --resume"):
        folder.check(resume=False)
    with pytest.raises(DataError, match="was interrupted: resume it"):
        folder.load()
    space = tiny_space()
    arch = space.largest()
    constraints = Constraints([Constraint("fake", math.inf, FakePredictor())])
    best = {**arch_summary(arch, space, constraints), "valid_loss": 5.5}
    written = folder.write_result({"evaluations": 3, "best": best, "pareto": [best], "space": space.name})
    loaded = SearchResult.load(folder.out)
    assert folder.finished and loaded == written and loaded["evaluations"] == 3
    assert loaded.best.arch == arch and loaded.best.key == arch.key() and loaded.best.valid_loss == 5.5
    assert loaded.best.predicted_ms["fake"] == pytest.approx(FakePredictor().predict([arch])[0])
    assert [c.arch for c in loaded.pareto] == [arch] and loaded.to_json()["best"]["key"] == arch.key()
    (folder.out / "result.json").write_text("{not json")
    with pytest.raises(DataError, match="is not a search result"):
        folder.load()


def test_arch_summary_is_what_search_and_evaluation_report(inputs):
    space = tiny_space()
    arch = space.smallest()
    pred = LatencyPredictor.load(inputs["root"] / "a.pred")
    summary = arch_summary(arch, space, Constraints([Constraint("fake", math.inf, pred)]))
    from hat_ray.model.accounting import count_flops, count_params

    assert summary["params"] == count_params(arch, space.super.qkv_dim)
    assert summary["flops"] == count_flops(arch, space.super.qkv_dim, space.super.seq_len)
    assert summary["predicted_ms"] == {"fake": pytest.approx(float(pred.predict([arch])[0]))}
    assert "predicted_ref" not in summary  # an ms predictor
    assert arch_summary(arch, space)["predicted_ms"] == {}


def test_a_search_fingerprinted_before_the_fidelity_options_resumes(inputs):
    """Options added later (EngineOptions.ADDED) compare as their default when a saved
    fingerprint lacks them; a value away from it is a change."""
    now = _fp(inputs, options=SearchOptions(algorithm="hat", scorers=2, seed=1,
                                            engine_kwargs={**ENGINE, "fidelity": 1.0, "promote": 0.25}))
    saved = _fp(inputs)  # ENGINE without fidelity / promote, as a search of an older version saved it
    assert "fidelity" not in saved["engine"]["options"] and resume_changes(saved, now) == []
    halving = _fp(inputs, options=SearchOptions(algorithm="hat", scorers=2, seed=1,
                                                engine_kwargs={**ENGINE, "fidelity": 0.25}))
    assert resume_changes(saved, halving) == ["--fidelity was 1.0, now 0.25"]

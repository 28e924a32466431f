"""SearchSpace validation, Arch round trips, and the sample/mutate/crossover invariants."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hat_ray.arch import FEATURE_NAMES, LAYER_KEYS, Arch, parse_arch
from hat_ray.errors import ArchError, ConfigError
from hat_ray.resources import bundled_names
from hat_ray.space import SearchSpace

SPACES = bundled_names("search_spaces")


def test_bundled_spaces_load_and_match_hat():
    assert set(SPACES) >= {"wmt14_en_de", "wmt14_en_fr", "wmt19_en_de", "iwslt14_de_en", "demo"}
    wmt = SearchSpace.load("wmt14_en_de")
    assert wmt.super.qkv_dim == 512 and wmt.super.encoder_ffn_embed_dim == 3072
    assert wmt.choices["encoder_ffn_embed_dim"] == (3072, 2048, 1024)
    assert wmt.choices["decoder_layers"] == (1, 2, 3, 4, 5, 6)
    assert wmt.latency_choices["decoder_ffn_embed_dim"] == (3072, 2048, 1024, 512)
    assert 4.1e14 < wmt.size() < 4.3e14  # HAT: "about 4.2e14"
    iwslt = SearchSpace.load("iwslt14_de_en")
    assert not iwslt.super.share_embeddings and iwslt.super.seq_len == 23
    assert iwslt.choices["encoder_self_attention_heads"] == (4, 2)
    # the latency space is wider than the super model: it is widened to contain it
    lat = iwslt.latency_space()
    assert lat.super.encoder_ffn_embed_dim == 3072 and lat.super.encoder_attention_heads == 8


def test_space_round_trip():
    for name in SPACES:
        space = SearchSpace.load(name)
        assert SearchSpace.from_dict(space.to_dict()) == space


def _demo_dict():
    return SearchSpace.load("demo").to_dict()


def test_bad_space_reports_every_problem_at_once():
    data = _demo_dict()
    data["bogus"] = 1
    data["super"]["qkv_dim"] = "big"
    data["choices"]["encoder_ffn_embed_dim"] = [4096, 512]
    data["choices"]["decoder_layers"] = [1, 9]
    data["choices"]["decoder_arbitrary_ende_attn"] = [-1, 3]
    del data["choices"]["encoder_embed_dim"]
    with pytest.raises(ConfigError) as exc:
        SearchSpace.from_dict(data, source="bad.yaml")
    problems = exc.value.problems
    text = str(exc.value)
    assert "\n" not in text and text.startswith("bad.yaml:")
    assert any("bogus" in p for p in problems)
    assert any("qkv_dim" in p for p in problems)
    assert "missing key 'encoder_embed_dim'" in text


def test_choices_outside_super_dims_are_listed():
    data = _demo_dict()
    data["choices"]["encoder_ffn_embed_dim"] = [4096, 512]
    data["choices"]["decoder_layers"] = [1, 9]
    data["choices"]["decoder_ende_attention_heads"] = [3]
    data["choices"]["decoder_arbitrary_ende_attn"] = [-1, 3]
    with pytest.raises(ConfigError) as exc:
        SearchSpace.from_dict(data)
    text = str(exc.value)
    for needle in ("[4096] exceed", "[9] exceed", "[3] must divide qkv_dim", "must be -1, 1 or 2"):
        assert needle in text
    assert len(exc.value.problems) == 4


def test_yaml_syntax_and_type_errors(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nsuper: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        SearchSpace.load(bad)
    wrong = tmp_path / "wrong.yaml"
    data = _demo_dict()
    data["super"]["share_embeddings"] = "yes"
    data["super"]["dropout"] = 2
    data["choices"]["decoder_layers"] = 3
    wrong.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        SearchSpace.load(wrong)
    assert len(exc.value.problems) == 3
    with pytest.raises(ConfigError, match="unknown search space 'nope'"):
        SearchSpace.load("nope")


ARCH_STRATEGY = st.tuples(st.sampled_from(SPACES), st.integers(0, 2**32 - 1))


@settings(max_examples=200, deadline=None)
@given(ARCH_STRATEGY, st.floats(0.0, 1.0))
def test_operators_never_leave_the_space(case, prob):
    name, seed = case
    space = SearchSpace.load(name)
    rng = np.random.default_rng(seed)
    a, b = space.sample(rng), space.sample(rng)
    for arch in (a, b, space.mutate(a, rng, prob), space.crossover(a, b, rng), space.largest(), space.smallest()):
        assert space.problems(arch) == []
        assert hash(arch) == hash(Arch.from_dict(arch.to_dict()))


def test_operators_are_deterministic_and_explore():
    space = SearchSpace.load("wmt14_en_de")
    a1 = [space.sample(np.random.default_rng(1)) for _ in range(2)]
    assert a1[0] == a1[1]
    rng = np.random.default_rng(0)
    parent = space.sample(rng)
    assert space.mutate(parent, rng, 0.0) == parent
    children = {space.mutate(parent, rng, 0.3) for _ in range(50)}
    assert len(children) > 40
    other = space.sample(rng)
    kids = [space.crossover(parent, other, rng) for _ in range(50)]
    # each child takes every active gene from one of its parents
    for kid in kids:
        assert kid.encoder_embed_dim in (parent.encoder_embed_dim, other.encoder_embed_dim)


def _reference_gene(space, rng):
    """HAT's gene drawn one rng.integers(n) call per position (the operators' original form)."""
    gene = {k: int(space.choices[k][rng.integers(len(space.choices[k]))])
            for k in ("encoder_embed_dim", "decoder_embed_dim", "encoder_layers", "decoder_layers")}
    for key in LAYER_KEYS:
        gene[key] = [int(space.choices[key][rng.integers(len(space.choices[key]))]) for _ in range(space.max_layers(key))]
    return gene


def _reference_arch_gene(space, arch, rng):
    gene = _reference_gene(space, rng)
    for key in gene:
        value = getattr(arch, key)
        gene[key] = list(value) + gene[key][len(value):] if isinstance(value, tuple) else value
    return gene


def _reference_mutate(space, arch, rng, prob):
    gene, fresh = _reference_arch_gene(space, arch, rng), _reference_gene(space, rng)
    for key, value in gene.items():
        if isinstance(value, list):
            gene[key] = [fresh[key][i] if rng.random() < prob else v for i, v in enumerate(value)]
        elif rng.random() < prob:
            gene[key] = fresh[key]
    return space.from_gene(gene)


def _reference_crossover(space, a, b, rng):
    ga, gb = _reference_arch_gene(space, a, rng), _reference_arch_gene(space, b, rng)
    child = {k: [x if rng.random() < 0.5 else y for x, y in zip(v, gb[k])] if isinstance(v, list)
             else (v if rng.random() < 0.5 else gb[k]) for k, v in ga.items()}
    return space.from_gene(child)


@pytest.mark.parametrize("name", SPACES)
def test_operators_draw_the_generator_as_one_call_per_gene_position(name):
    """The operators draw a whole gene in one rng.integers call (a search breeds tens of thousands
    of Archs): the same Archs and the same generator state as one call per position, so seeded
    searches keep their trajectories."""
    space = SearchSpace.load(name)
    fast, ref = np.random.default_rng(11), np.random.default_rng(11)
    archs = [space.sample(fast) for _ in range(30)]
    assert archs == [space.from_gene(_reference_gene(space, ref)) for _ in range(30)]
    for i in range(60):
        a, b, prob = archs[i % 30], archs[(7 * i + 3) % 30], (0.0, 0.3, 1.0)[i % 3]
        assert space.mutate(a, fast, prob) == _reference_mutate(space, a, ref, prob)
        assert space.crossover(a, b, fast) == _reference_crossover(space, a, b, ref)
        assert space.to_gene(a, fast) == _reference_arch_gene(space, a, ref)
        assert space.random_gene(fast) == _reference_gene(space, ref)
    assert fast.bit_generator.state == ref.bit_generator.state


def test_a_space_pickles_without_its_gene_cache():
    import pickle

    space = SearchSpace.load("demo")
    before = space.sample(np.random.default_rng(3))  # fills the flat-gene cache
    assert "_gene_slots" in space.__dict__
    copy = pickle.loads(pickle.dumps(space))
    assert "_gene_slots" not in copy.__dict__ and copy == space
    assert copy.sample(np.random.default_rng(3)) == before


def test_sampler_is_uniform_per_choice():
    space = SearchSpace.load("wmt14_en_de")
    rng = np.random.default_rng(0)
    depths = [space.sample(rng).decoder_layers for _ in range(3000)]
    counts = np.bincount(depths, minlength=7)[1:]
    assert counts.min() > 400 and counts.max() < 600


def test_contains_gives_precise_errors():
    space = SearchSpace.load("wmt14_en_de")
    arch = Arch(512, 768, (3072, 4096, 1024, 1024, 1024, 1024), (8,) * 6, (1024,), (3,), (8,), (2,))
    problems = space.problems(arch)
    assert "decoder_embed_dim=768 not in [640, 512]" in problems
    assert "encoder_ffn_embed_dim[1]=4096 not in [3072, 2048, 1024]" in problems
    assert "decoder_self_attention_heads[0]=3 not in [8, 4]" in problems
    with pytest.raises(ArchError) as exc:
        space.check(arch, source="a.yaml")
    assert "a.yaml" in str(exc.value) and len(exc.value.problems) == 3


def test_arch_rejects_inconsistent_layer_lists():
    with pytest.raises(ArchError, match="decoder_self_attention_heads lists 2 layers, decoder has 1"):
        Arch(512, 512, (1024,), (8,), (1024,), (8, 8), (8,), (-1,))
    with pytest.raises(ArchError, match="must be an integer"):
        Arch("512", 512, (1024,), (8,), (1024,), (8,), (8,), (-1,))


def test_hat_yaml_import_export(shared_data):
    files = sorted((shared_data / "hat_subconfigs").glob("*.yml"))
    assert len(files) == 44
    for f in files:
        data = yaml.safe_load(f.read_text())
        arch = parse_arch(data, str(f))
        assert Arch.from_hat(arch.to_hat()) == arch
        assert parse_arch(arch.to_dict()) == arch
        assert arch.decoder_layers == data["decoder-layer-num-subtransformer"]


def test_hat_yaml_truncates_inactive_layers_and_reports_problems():
    space = SearchSpace.load("wmt14_en_de")
    full = space.largest().to_hat()
    full["decoder-layer-num-subtransformer"] = 2  # lists keep 6 entries (inactive carried along)
    arch = Arch.from_hat(full)
    assert arch.decoder_layers == 2 and len(arch.decoder_arbitrary_ende_attn) == 2
    bad = dict(full)
    bad["decoder-layer-num-subtransformer"] = 7
    bad["encoder-embed-dim-subtransform"] = 1
    with pytest.raises(ArchError) as exc:
        parse_arch(bad)
    assert any("unknown key" in p for p in exc.value.problems)


def test_features_follow_hat_definition():
    arch = Arch(640, 512, (1024, 2048, 3072, 1024, 1024, 1024), (8, 4, 4, 4, 8, 8),
                (2048, 1024, 3072), (8, 4, 4), (4, 4, 8), (-1, 1, 2))
    f = dict(zip(FEATURE_NAMES, arch.features()))
    assert f["encoder_ffn_embed_dim_avg"] == pytest.approx(1536)
    assert f["encoder_self_attention_heads_avg"] == pytest.approx(6)
    assert f["decoder_layer_num"] == 3
    assert f["decoder_ende_attention_heads_avg"] == pytest.approx(16 / 3)
    assert f["decoder_arbitrary_ende_attn_avg"] == pytest.approx(2.0)  # (1 + 2 + 3) / 3


def _sums(choices, n):
    sums = {0}
    for _ in range(n):
        sums = {a + c for a in sums for c in choices}
    return sums


def test_hat_latency_csv_features_are_reachable(shared_data):
    """Every feature row of HAT's latency dataset is the feature vector of some Arch of the
    latency space: scalar features are choices, averages are sums of n layer choices / n."""
    import pandas as pd

    df = pd.read_csv(shared_data / "hat_latency" / "wmt14ende_cpu_xeon.csv.gz")
    assert list(df.columns[:10]) == list(FEATURE_NAMES)
    space = SearchSpace.load("wmt14_en_de").latency_space()
    c = space.choices
    per_layer = {
        "encoder_ffn_embed_dim_avg": ("encoder_layer_num", c["encoder_ffn_embed_dim"]),
        "encoder_self_attention_heads_avg": ("encoder_layer_num", c["encoder_self_attention_heads"]),
        "decoder_ffn_embed_dim_avg": ("decoder_layer_num", c["decoder_ffn_embed_dim"]),
        "decoder_self_attention_heads_avg": ("decoder_layer_num", c["decoder_self_attention_heads"]),
        "decoder_ende_attention_heads_avg": ("decoder_layer_num", c["decoder_ende_attention_heads"]),
        "decoder_arbitrary_ende_attn_avg": ("decoder_layer_num", (1, 2, 3)),
    }
    assert set(df["encoder_embed_dim"]) <= set(c["encoder_embed_dim"])
    assert set(df["decoder_layer_num"]) <= set(c["decoder_layers"])
    for name, (layers, values) in per_layer.items():
        for n, group in df.groupby(layers):
            reachable = _sums(values, int(n))
            totals = {round(v * n) for v in group[name]}
            assert totals <= reachable, name
    # and our own features land in the same format
    arch = space.sample(np.random.default_rng(0))
    assert len(arch.features()) == 10

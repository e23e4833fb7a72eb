"""The tuning search (issue 14): an equal, seeded budget per method, widening within it, DA weights on
the base's choice, no-change and edge flags, and the selection with its figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from unlearn_da import pipeline as P
from unlearn_da.settings.config import load_config, resolve_method, tuning_space, tuning_variants, validate_config
from unlearn_da.core.errors import ConfigError
from unlearn_da.settings.search import da_round, parse_range, round1, round2, round2_ranges
from unlearn_da.tuning.select import all_candidates, edge_values, no_change_candidates, run_selection
from unlearn_da.tuning.figures import figure_title

SPACE = {"ft": {"lr": ["log", 0.001, 0.1], "epochs": ["int", 1, 8]},
         "muda": {"lr": ["log", 0.003, 0.1], "forget_loss": ["choice", "none", "neg_ce", "random_label"]}}


def test_round1_is_a_seeded_log_uniform_latin_hypercube():
    a = round1(SPACE, budget=12, widen=4, seed=0)
    assert a == round1(SPACE, budget=12, widen=4, seed=0)
    assert a != round1(SPACE, budget=12, widen=4, seed=1)
    ft = [c for c in a.values() if c["base"] == "ft"]
    assert len(ft) == 8 and sorted(a)[:8] == [f"ft__t{i:02d}" for i in range(8)]
    # one learning rate in each of the 8 equal strata of log10(lr) in [-3, -1]
    strata = sorted(int((math.log10(c["lr"]) + 3) / 2 * 8) for c in ft)
    assert strata == list(range(8))
    assert all(isinstance(c["epochs"], int) and 1 <= c["epochs"] <= 8 for c in ft)
    losses = [c["forget_loss"] for c in a.values() if c["base"] == "muda"]
    assert sorted(set(losses)) == ["neg_ce", "none", "random_label"]
    assert max(losses.count(v) for v in set(losses)) - min(losses.count(v) for v in set(losses)) <= 1


def test_round2_widens_beyond_an_edge_and_refines_inside():
    low = round2_ranges(SPACE["ft"], {"lr": 0.0011, "epochs": 4}, n1=8)
    (lo, hi), edges = low[0]["lr"]["log"], low[1]
    assert edges == ["lr=0.0011 (low edge of [0.001, 0.1])"]
    assert 0.0001 <= lo < 0.001 < hi < 0.01  # at most a factor 10 below the declared range
    mid = round2_ranges(SPACE["ft"], {"lr": 0.01, "epochs": 4}, n1=8)
    (lo, hi), edges = mid[0]["lr"]["log"], mid[1]
    assert edges == [] and 0.001 < lo < 0.01 < hi < 0.1
    assert mid[0]["epochs"]["int"][0] <= 4 <= mid[0]["epochs"]["int"][1]
    # a uniform range widens only up to its limit
    alpha = round2_ranges({"alpha": ["uniform", 0.8, 0.99, 0.5, 0.999]}, {"alpha": 0.985}, n1=8)
    assert alpha[0]["alpha"]["uniform"][1] == 0.999 and alpha[1]


def test_every_method_gets_exactly_the_budget_and_round2_keeps_the_best_choice():
    cfg = load_config()
    space, tune = tuning_space(cfg), cfg["tuning"]
    assert set(space) == {"ft", "ga", "neggrad_plus", "rl", "boundary_shrink", "l1_sparse", "salun", "scrub",
                          "bad_teacher", "ssd", "muda"}
    r1 = tuning_variants(cfg)
    rng = np.random.default_rng(0)
    scores = {name: float(rng.uniform()) for name in r1}
    r2, info = round2(space, r1, scores, tune["budget"], tune["widen"], tune["seed"])
    for method in space:
        tried = [n for n, c in {**r1, **r2}.items() if c["base"] == method]
        assert len(tried) == tune["budget"], method
        assert info[method]["kind"] in ("widen", "refine")
    best = info["muda"]["best"]
    for spec in r2.values():
        if spec["base"] == "muda":  # categorical keys keep round 1's best
            assert spec["forget_loss"] == r1[best]["forget_loss"]
            assert spec["basis_source"] == r1[best]["basis_source"]


def test_widen_zero_spends_the_whole_budget_in_round1_and_says_no_round2_ran():
    """A search with widen 0 (Fashion-MNIST's first search was budget 6, widen 0): round 1 keeps the
    same candidates as budget 8 with widen 2, round 2 adds none, and the report says 'none' instead of
    a widening that never ran."""
    cfg = load_config(["config/fashion-mnist.yaml"])
    cfg["tuning"].update(budget=6, widen=0)
    space, tune = tuning_space(cfg), cfg["tuning"]
    r1 = tuning_variants(cfg)
    assert r1 == round1(space, 8, 2, tune["seed"])
    assert len(r1) == 6 * len(space)
    scores = {name: float(i) for i, name in enumerate(sorted(r1))}
    r2, info = round2(space, r1, scores, tune["budget"], tune["widen"], tune["seed"])
    assert r2 == {} and {i["kind"] for i in info.values()} == {"none"}
    assert any(i["edges"] for i in info.values())  # edges are still reported


def test_da_candidates_reuse_the_base_choice_and_set_only_the_weight():
    cfg = load_config()
    chosen = {"ft": {"candidate": "ft__t03", "values": {"lr": 0.05, "epochs": 7}}}
    plan = da_round(chosen, ["ft"], [0.3, 1.0, 3.0])
    assert plan == {f"ft__d{i:02d}": {"base": "ft", "lr": 0.05, "epochs": 7, "da_weight": w}
                    for i, w in enumerate([0.3, 1.0, 3.0])}
    base, hp, plus_da = resolve_method(cfg, "ft__d02+da", plan)
    assert (base, plus_da, hp["lr"], hp["epochs"]) == ("ft", True, 0.05, 7) and "da_weight" not in hp
    params = P.unlearn_params(cfg, "ft__d02+da", plan)
    assert params["da"]["lambda_da"] == 3.0 and "weights" not in params["da"]
    # the tuned weight of a reported "+da" variant comes from unlearn.da.weights
    cfg["unlearn"]["da"]["weights"] = {"ft": 0.3}
    assert P.unlearn_params(cfg, "ft+da")["da"]["lambda_da"] == 0.3
    assert P.unlearn_params(cfg, "ga+da")["da"]["lambda_da"] == cfg["unlearn"]["da"]["lambda_da"]


def _rec(model, **metrics):
    base = {"UA": 10.0, "RA": 100.0, "val_acc": 90.0, "MIA_val": 20.0}
    return {"model": model, "scenario": "class0", "seed": 100, "metrics": {**base, **metrics}}


def test_selection_flags_no_change_and_edges_and_writes_a_figure_per_method(tmp_path):
    records = [_rec("retrain"), _rec("original", UA=0.0, MIA_val=1.0),
               _rec("ft__t00", UA=0.0, MIA_val=1.0),            # the original's scores: no change
               _rec("ft__t01", UA=6.0), _rec("ft__w00", UA=9.0),  # the best has the largest lr tried
               _rec("ft__d00+da", UA=9.5), _rec("ft__d01+da", UA=8.0)]
    inputs = []
    for i, rec in enumerate(records):
        path = tmp_path / f"m{i}.json"
        path.write_text(json.dumps(rec))
        inputs.append(str(path))
    r1 = {"ft__t00": {"base": "ft", "lr": 0.001}, "ft__t01": {"base": "ft", "lr": 0.01}}
    plan2 = tmp_path / "round2.json"
    plan2.write_text(json.dumps({"candidates": {"ft__w00": {"base": "ft", "lr": 0.05}},
                                 "info": {"ft": {"kind": "widen", "edges": ["lr=0.01 (high edge of [0.001, 0.01])"]}}}))
    plan_da = tmp_path / "da_round.json"
    plan_da.write_text(json.dumps({"candidates": {"ft__d00": {"base": "ft", "lr": 0.05, "da_weight": 0.5},
                                                  "ft__d01": {"base": "ft", "lr": 0.05, "da_weight": 2.0}}}))
    chosen = run_selection(inputs, r1, str(tmp_path / "sel"), [str(plan2), str(plan_da)], str(tmp_path / "fig"))
    assert chosen["ft"]["candidate"] == "ft__w00" and chosen["ft"]["tried"] == 3
    assert chosen["ft"]["no_change"] == ["ft__t00"] and chosen["ft"]["edge"] == ["lr=0.05 (the largest tried)"]
    assert chosen["ft"]["round2"]["kind"] == "widen"
    assert chosen["ft+da"]["candidate"] == "ft__d00+da" and chosen["ft+da"]["values"]["da_weight"] == 0.5
    assert chosen["ft+da"]["edge"] == ["da_weight=0.5 (the smallest tried)"]
    md = (tmp_path / "sel.md").read_text()
    assert "| ft | lr=0.05 | 0.250 | 3 | widen: lr=0.01 (high edge" in md and "lr=0.001 (no change)" in md
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["ft+da.pdf", "ft+da.png", "ft.pdf", "ft.png"]
    assert json.loads((tmp_path / "sel.json").read_text())["chosen"]["ft"]["values"] == {"lr": 0.05}


def test_figure_titles_name_only_the_rounds_that_ran():
    assert figure_title("ft", ["ft__t00", "ft__t01", "ft__w00"]) == "ft: 3 candidates (blue: round 1, orange: round 2)"
    assert figure_title("ssd", ["ssd__t00", "ssd__t01"]) == "ssd: 2 candidates (round 1 only)"
    assert figure_title("rl+da", ["rl__d00+da", "rl__d01+da"]) == "rl+da: 2 DA weights at rl's choice"


def test_edge_and_no_change_helpers_on_their_own():
    cands = all_candidates({"a__t00": {"base": "a", "x": 1}}, [{"candidates": {"a__w00": {"base": "a", "x": 3},
                                                                                "a__d00": {"base": "a", "x": 3,
                                                                                           "da_weight": 1.0}}}])
    assert cands["a__d00+da"]["base"] == "a+da" and "a__d00" not in cands
    assert edge_values(cands, "a", {"x": 3}) == ["x=3 (the largest tried)"]
    assert edge_values({"a__t00": {"base": "a", "x": 1}, "a__t01": {"base": "a", "x": 2},
                        "a__t02": {"base": "a", "x": 3}}, "a", {"x": 2}) == []
    assert no_change_candidates([_rec("original"), _rec("a__t00"), _rec("a__w00", UA=11.0)], cands) == ["a__t00"]


@pytest.mark.parametrize("space, widen, expected", [
    ({"ga": {"lr": ["loguniform", 0.1, 1.0]}}, 4, "tuning.space.ga.lr"),
    ({"ga": {"lr": ["log", 1.0, 0.1]}}, 4, "needs low <= high"),
    ({"ga": {"lr": ["log", 0.0, 0.1]}}, 4, "a log range needs low > 0"),
    ({"ga": {"lr": ["log", 0.01, 0.1, 0.001]}}, 4, "[log, low, high, limit_low, limit_high]"),
    ({"ga": {"epochs": ["int", -2, 3]}}, 4, "tuning.space.ga.epochs"),
    ({"nope": {"lr": ["log", 0.01, 0.1]}}, 4, "unknown method 'nope'"),
    ({}, 12, "tuning.widen"),
])
def test_bad_search_spaces_are_refused_naming_the_key(space, widen, expected):
    cfg = load_config()
    cfg["tuning"]["space"].update(space)
    cfg["tuning"]["widen"] = widen
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, sources=["config/config.yaml", "overlay.yaml"])
    assert expected in str(err.value)


def test_parse_range_forms():
    assert parse_range(["log", 0.01, 0.1]) == {"log": [0.01, 0.1]}
    assert parse_range(["uniform", 0.8, 0.99, 0.5, 0.999]) == {"uniform": [0.8, 0.99], "limit": [0.5, 0.999]}
    assert parse_range(["choice", "a"]) == {"choice": ["a"]}

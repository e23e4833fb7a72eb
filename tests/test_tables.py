"""Aggregation: per-seed gaps to the oracle, mean ± std, best/second marks, selection rule."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from unlearn_da.reporting.tables import add_oracle_gaps, load_records, rank_marks, run_aggregate, summarise, wide_table
from unlearn_da.tuning.select import score_candidates, select


def _write(tmp_path, model, seed, **metrics):
    path = tmp_path / f"{model}-{seed}.json"
    path.write_text(json.dumps({"model": model, "seed": seed, "scenario": "random10", "metrics": metrics}))
    return path


@pytest.fixture
def files(tmp_path):
    return [
        _write(tmp_path, "retrain", 0, UA=10, RA=100, TA=90, MIA=20, seconds=10),
        _write(tmp_path, "retrain", 1, UA=12, RA=100, TA=92, MIA=22, seconds=10),
        _write(tmp_path, "a", 0, UA=14, RA=98, TA=90, MIA=20, seconds=1),   # gaps 4, 2, 0, 0 -> 1.5
        _write(tmp_path, "a", 1, UA=12, RA=100, TA=88, MIA=26, seconds=2),  # gaps 0, 0, 4, 4 -> 2.0
        _write(tmp_path, "b", 0, UA=0, RA=100, TA=90, MIA=0, seconds=5),    # gaps 10, 0, 0, 20 -> 7.5
        _write(tmp_path, "b", 1, UA=0, RA=100, TA=92, MIA=0, seconds=5),    # gaps 12, 0, 0, 22 -> 8.5
    ]


def test_gaps_are_per_seed_then_averaged(files):
    long = add_oracle_gaps(load_records(files))
    stats = summarise(long, ["retrain", "a", "b"]).set_index(["model", "metric"])
    assert stats.loc[("a", "avg_gap_seed"), "mean"] == pytest.approx(1.75)
    assert stats.loc[("b", "avg_gap_seed"), "mean"] == pytest.approx(8.0)
    assert stats.loc[("a", "gap_UA"), "mean"] == pytest.approx(2.0)
    assert stats.loc[("a", "RTE"), "mean"] == pytest.approx(0.15)
    assert stats.loc[("retrain", "avg_gap_seed"), "mean"] == 0.0
    assert stats.loc[("b", "UA"), "std"] == 0.0 and stats.loc[("a", "UA"), "std"] == pytest.approx(1.4142, 1e-3)


def test_best_and_second_marks(files):
    long = add_oracle_gaps(load_records(files))
    wide = wide_table(summarise(long, ["retrain", "a", "b"]), ["UA", "avg_gap_seed", "seconds"])
    marks = rank_marks(wide, ["UA", "avg_gap_seed", "seconds"])
    assert marks[("a", "avg_gap_seed")] == "best" and marks[("b", "avg_gap_seed")] == "second"
    assert marks[("a", "seconds")] == "best"
    assert ("retrain", "UA") not in marks


def test_aggregate_writes_every_format(files, tmp_path):
    run_aggregate([str(f) for f in files], ["retrain", "a", "b"], "random10", "toy", str(tmp_path / "out"))
    md = (tmp_path / "out" / "table.md").read_text()
    # Avg. Gap of a over its 2 seeds, with its 95 % CI: 1.75 ± t(0.975, 1) * 0.354 / sqrt(2)
    assert "Retrain (oracle)" in md and "**1.75 ± 0.35 [-1.43, 4.93]**" in md
    assert "ranking by Avg. Gap (per seed)" in md and "| 1 | a | 2 | 1.75 ± 0.35 | [-1.43, 4.93] |" in md
    assert r"\textbf{" in (tmp_path / "out" / "table.tex").read_text()
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert list(table["model"]) == ["retrain", "a", "b"]
    assert table.loc[1, "avg_gap_seed_ci95_low"] == pytest.approx(-1.4270, abs=1e-3)  # every metric's CI is in the CSV
    assert {"UA_ci95_low", "UA_ci95_high", "RA_ci95_high"} <= set(table.columns)
    # what `dvc exp show` compares: per-seed and SalUn Avg. Gaps, MUDA's rank (none here: no muda model)
    head = json.loads((tmp_path / "out" / "headline.json").read_text())
    assert head["avg_gap_per_seed"] == {"a": 1.75, "b": 8.0} and head["muda_rank"] is None
    assert head["avg_gap"]["a"] == pytest.approx(1.75)  # gaps of the seed means: UA 2, RA 1, TA 2, MIA 2


def test_headline_ranks_muda_among_the_methods_not_the_reference_rows():
    from unlearn_da.reporting.tables import headline

    def model(per_seed, salun):
        return {"avg_gap_seed": {"mean": per_seed}, "avg_gap": {"mean": salun}}

    summary = {"retrain": model(0.0, 0.0), "retrain_alt": model(0.3, 0.2), "original": model(9.0, 9.0),
               "ft": model(1.0, 0.9), "muda": model(0.5, 0.4), "ga": model(0.25, 0.3)}
    head = headline(summary)
    assert head["muda_rank"] == 2 and head["methods"] == 3 and head["noise_floor"] == 0.3
    assert "retrain" not in head["avg_gap_per_seed"] and head["avg_gap_per_seed"]["original"] == 9.0


def test_avg_gap_is_salun_s_gap_of_seed_means_beside_the_per_seed_form(tmp_path):
    """SalUn's tables take |mean(model) - mean(Retrain)| per metric: errors of opposite sign on two seeds
    cancel there, not in the per-seed form; the reported Avg. Gap is SalUn's, the per-seed one its own column."""
    files = [_write(tmp_path, "retrain", 0, UA=10, RA=100, TA=90, MIA=20, seconds=10),
             _write(tmp_path, "retrain", 1, UA=12, RA=100, TA=92, MIA=22, seconds=10),
             _write(tmp_path, "c", 0, UA=12, RA=100, TA=90, MIA=20, seconds=1),  # UA +2 above its oracle
             _write(tmp_path, "c", 1, UA=10, RA=100, TA=92, MIA=22, seconds=1)]  # UA -2 below its oracle
    summary = run_aggregate([str(f) for f in files], ["retrain", "c"], "random10", "toy", str(tmp_path / "out"))
    assert summary["c"]["avg_gap"]["mean"] == pytest.approx(0.0)  # means 11 and 11: no gap
    assert summary["c"]["avg_gap_seed"]["mean"] == pytest.approx(0.5)  # 2 on UA each seed, / 4 metrics
    assert summary["c"]["avg_gap"]["std"] is None and summary["c"]["avg_gap"]["ci95"] == [None, None]
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| Avg. Gap | Avg. Gap (per seed) |" in md and "Avg. Gap = SalUn's convention" in md
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert table.set_index("model").loc["c", "avg_gap_mean"] == pytest.approx(0.0)


def test_selection_picks_the_smallest_validation_gap():
    oracle = {"UA": 10, "RA": 100, "val_acc": 90, "MIA_val": 20}
    recs = [{"model": "retrain", "scenario": "s", "seed": 0, "metrics": oracle},
            {"model": "ga__t00", "scenario": "s", "seed": 0, "metrics": {**oracle, "UA": 30}},
            {"model": "ga__t01", "scenario": "s", "seed": 0, "metrics": {**oracle, "UA": 14}}]
    cands = {"ga__t00": {"base": "ga", "lr": 0.1}, "ga__t01": {"base": "ga", "lr": 0.01}}
    chosen = select(score_candidates(recs, cands), cands)
    assert chosen["ga"]["candidate"] == "ga__t01" and chosen["ga"]["values"] == {"lr": 0.01}
    assert chosen["ga"]["score"] == pytest.approx(1.0)


def test_tradeoff_zoom_window_stays_on_the_percent_scale_and_merges_coinciding_labels():
    from unlearn_da.reporting.plots import _label_groups, _percent_limits

    lo, hi = _percent_limits(99.9, 2.0)  # an oracle at the top of the scale
    assert hi < 100.5 and lo < 99.9 < hi and hi - lo == pytest.approx(4.0)
    lo, hi = _percent_limits(0.5, 2.0)
    assert lo > -0.5 and lo < 0.5 < hi
    groups = _label_groups({"a": (100.0, 88.0), "b": (100.0, 88.01), "c": (90.0, 50.0)}, (0.5, 0.5))
    assert sorted(text for _, _, text in groups) == ["a, b", "c"]

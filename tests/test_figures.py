"""Figures a reader can read: error bars stay within a percentage's range, and no two labels of
the trade-off figure overlap (checked on the shipped digits results, where they used to)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unlearn_da.reporting import plots
from unlearn_da.tools.readme_tables import long_table
from unlearn_da.tools.reproduction import load_expected


def _long(rows: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    out = [{"model": model, "seed": seed, "metric": metric, "value": value}
           for model, metrics in rows.items() for metric, values in metrics.items()
           for seed, value in enumerate(values)]
    return pd.DataFrame(out)


def _bar_extents(fig) -> tuple[float, float, float, float]:
    """The smallest and largest x and y any error bar of ``fig`` reaches."""
    xs, ys = [], []
    for ax in fig.axes:
        for collection in ax.collections:
            for segment in collection.get_segments():
                xs.extend(np.asarray(segment)[:, 0])
                ys.extend(np.asarray(segment)[:, 1])
    return min(xs), max(xs), min(ys), max(ys)


def test_error_bars_are_clipped_to_the_percent_range():
    # UA 100 on four seeds and 60 on one: mean 92, std 17.9, so an unclipped bar reaches 109.9;
    # MIA 0 or 30 reaches below 0
    long = _long({
        "retrain": {"UA": [100, 100, 100, 100, 100], "TA": [98, 99, 98, 99, 98], "MIA": [100] * 5, "RA": [100] * 5},
        "ga": {"UA": [100, 100, 100, 100, 60], "TA": [99, 60, 98, 99, 97], "MIA": [0, 0, 0, 0, 30], "RA": [99] * 5},
        "original": {"UA": [0, 1, 0, 2, 0], "TA": [99, 98, 99, 98, 99], "MIA": [0, 2, 0, 1, 0], "RA": [100] * 5},
    })
    plt, _ = plots._setup()
    fig = plots.tradeoff_figure(long, ["retrain", "original", "ga"], "synthetic")
    x_lo, x_hi, y_lo, y_hi = _bar_extents(fig)
    plt.close(fig)
    assert x_lo >= 0.0 and y_lo >= 0.0
    assert x_hi <= 100.0 and y_hi <= 100.0


def test_clipped_error_keeps_the_bar_inside_and_never_negative():
    assert plots.clipped_error(92.0, 17.9) == (17.9, 8.0)
    assert plots.clipped_error(6.0, 13.4) == (6.0, 13.4)
    assert plots.clipped_error(50.0, float("nan")) == (0.0, 0.0)


def _overlapping_labels(fig) -> list[tuple[str, str]]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pairs = []
    for ax in fig.axes:
        boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in ax.texts if text.get_text()]
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
            width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if width > 1.0 and height > 1.0:  # pixels: touching edges is not an overlap
                pairs.append((a, b))
    return pairs


@pytest.mark.parametrize("run,scenario", [("digits-smallcnn", "class0"), ("digits-smallcnn", "random10")])
def test_tradeoff_labels_do_not_overlap_on_the_shipped_digits_results(run: str, scenario: str, pristine: Path):
    long = long_table(load_expected(pristine / "expected" / f"{run}.json"), scenario)
    plt, _ = plots._setup()
    fig = plots.tradeoff_figure(long, list(dict.fromkeys(long["model"])), f"digits {scenario}")
    overlaps = _overlapping_labels(fig)
    plt.close(fig)
    assert not overlaps, overlaps


def test_asr_labels_do_not_overlap_on_the_shipped_backdoor_results(pristine: Path):
    long = long_table(load_expected(pristine / "expected" / "digits-smallcnn-backdoor.json"), "backdoor10")
    plt, _ = plots._setup()
    fig = plots.tradeoff_figure(long, list(dict.fromkeys(long["model"])), "digits backdoor10",
                                pairs=(("TA", "ASR"),), subject="backdoor removal")
    overlaps = _overlapping_labels(fig)
    plt.close(fig)
    assert not overlaps, overlaps


LABELS = r"""
import json, sys
from unlearn_da.reporting import plots
from unlearn_da.tools.reproduction import load_expected
from unlearn_da.tools.readme_tables import long_table
long = long_table(load_expected(sys.argv[1]), "class0")
plt, _ = plots._setup()
fig = plots.tradeoff_figure(long, list(dict.fromkeys(long["model"])), "digits class0")
print(json.dumps([[t.get_text(), [round(v, 3) for v in t.get_position()]] for ax in fig.axes for t in ax.texts]))
"""


def test_the_figure_does_not_depend_on_python_s_hash_seed(pristine: Path):
    """Names merged into one label, and so where labels go, follow the models' order, not a set's."""
    import subprocess
    import sys

    from conftest import env_with_venv

    drawn = []
    for seed in ("1", "2", "3"):
        proc = subprocess.run([sys.executable, "-c", LABELS, str(pristine / "expected" / "digits-smallcnn.json")],
                              env={**env_with_venv(), "PYTHONHASHSEED": seed}, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        drawn.append(proc.stdout)
    assert drawn[0] == drawn[1] == drawn[2]

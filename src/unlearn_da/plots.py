"""Figures (seaborn, PNG + PDF) drawn from the aggregated tables; every figure marks the oracle."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence

import pandas as pd

from .artifacts import atomic_path
from .tables import model_label


def _setup():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def save_figure(fig, path: str | Path) -> None:
    """PNG at ``path`` and a PDF beside it, each written atomically."""
    path = Path(path)
    for target in (path, path.with_suffix(".pdf")):
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=target.suffix[1:], dpi=150, bbox_inches="tight")


def accuracy_bars(long_csv: str, model_order: Sequence[str], title: str, out: str) -> None:
    """UA / RA / TA per model (mean and std over seeds), the oracle's mean as a dashed line."""
    plt, sns = _setup()
    long = pd.read_csv(long_csv)
    metrics = ["UA", "RA", "TA"]
    data = long[long["metric"].isin(metrics)].copy()
    present = [m for m in model_order if m in set(data["model"])]
    data["model"] = pd.Categorical(data["model"].map(model_label), [model_label(m) for m in present])
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(present), 3.6))
    sns.barplot(data=data, x="metric", y="value", hue="model", order=metrics, errorbar="sd", ax=ax,
                palette="colorblind")
    oracle = data[data["model"] == model_label("retrain")].groupby("metric", observed=True)["value"].mean()
    for i, metric in enumerate(metrics):
        if metric in oracle:
            ax.hlines(oracle[metric], i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1.2,
                      label="oracle mean" if i == 0 else None)
    ax.set_xlabel("")
    ax.set_ylabel("accuracy metric (%)  —  UA = 100 − forget acc.")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="model")
    save_figure(fig, out)
    plt.close(fig)

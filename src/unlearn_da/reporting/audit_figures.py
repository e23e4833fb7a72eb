"""The audit's two figures: per-example KLoM per model kind, and the ROC curves of its two games on log axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..jobs.audit_logits import AUDIT_SETS
from ..metrics.ulira import roc
from .plots import _setup, save_figure

LABELS = {"retrain_alt": "oracle (2nd ensemble)", "original": "original"}
# the methods' curves: no black (the oracle row) and no red (the originals)
METHOD_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def klom_figure(scores: dict[str, np.ndarray], floor: dict[str, Any], rows: list[str], title: str,
                path: str | Path) -> None:
    """Box plots of the per-example KLoM of every row, one panel per audit set, with the oracle null:
    the band spans the 99 % range of its median, the dashed line the median of its 95th percentile."""
    plt, _ = _setup()
    fig, axes = plt.subplots(1, len(AUDIT_SETS), figsize=(4.2 * len(AUDIT_SETS), 0.42 * len(rows) + 1.6),
                             sharey=True)
    labels = [LABELS.get(r, r) for r in rows]
    for ax, s in zip(axes, AUDIT_SETS, strict=True):
        data = [scores[f"{r}/klom_{s}"] for r in rows]
        ax.boxplot(data, orientation="horizontal", widths=0.6, showfliers=True, flierprops={"markersize": 2, "alpha": 0.4})
        lo, hi = floor[f"klom_{s}_median"]["range99"]
        ax.axvspan(lo, hi, color="tab:green", alpha=0.2, label="oracle null: median (99 % range)")
        ax.axvline(floor[f"klom_{s}_p95"]["median"], color="tab:green", ls="--", lw=1,
                   label="oracle null: 95th percentile")
        ax.set_title(f"{s} examples")
        ax.set_xlabel("KLoM (nats; lower = closer to the oracles)")
        ax.set_yticks(range(1, len(rows) + 1), labels)
        ax.invert_yaxis()
    handles, names = axes[0].get_legend_handles_labels()
    fig.suptitle(f"{title}: per-example KLoM", fontsize=10)
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, path)
    plt.close(fig)


GAMES = (("membership", "membership: forget vs never-seen examples\n(false positive: a never-seen example taken for a member)"),
         ("distinct", "against the oracles: forget examples\n(false positive: an oracle taken for the row's model)"))


def roc_figure(scores: dict[str, np.ndarray], rows: list[str], title: str, path: str | Path) -> None:
    """The ROC of every row in both games on log-log axes (the low-FPR corner is what matters); the
    diagonal is chance. Left: the membership game (privacy); right: told apart from the oracles."""
    plt, _ = _setup()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.6))
    for ax, (game, caption) in zip(axes, GAMES, strict=True):
        floor = 1.0 / scores[f"{rows[0]}/{game}_negative"].size
        methods = iter(METHOD_COLOURS * (1 + len(rows) // len(METHOD_COLOURS)))
        for r in rows:
            fpr, tpr = roc(scores[f"{r}/{game}_positive"], scores[f"{r}/{game}_negative"])
            style = {"retrain_alt": {"color": "black", "lw": 2}, "original": {"color": "tab:red", "lw": 2}}.get(
                r, {"color": None, "lw": 1.2})
            style["color"] = style["color"] or next(methods)
            ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=LABELS.get(r, r), **style)
        ax.plot([floor, 1], [floor, 1], color="grey", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1)
        ax.set_ylim(floor, 1.05)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title(caption, fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)

"""The selection's figures: per method, the score against each swept value (tuning.py's selection).

Its own module so that a change to a figure reruns only the selection rule, not the search's
planning checkpoints (pipeline.RULE_SOURCES).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROUND_COLOURS = {"__t": "tab:blue", "__w": "tab:orange", "__d": "tab:green"}


def _round(name: str) -> str:
    """The round a candidate's name says: ``__t`` round 1, ``__w`` round 2, ``__d`` the DA-weight round."""
    return next((tag for tag in ROUND_COLOURS if tag in name), "__t")


def figure_title(method: str, names: list[str]) -> str:
    """What the points are; the colour legend names only the rounds that are present."""
    rounds = {_round(n) for n in names}
    if rounds == {"__d"}:
        return f"{method}: {len(names)} DA weights at {method.removesuffix('+da')}'s choice"
    if "__w" in rounds:
        return f"{method}: {len(names)} candidates (blue: round 1, orange: round 2)"
    return f"{method}: {len(names)} candidates (round 1 only)"


def _log_axis(ax) -> None:
    """Log x axis labelled at 1 and 3 times each power of ten, as plain numbers (matplotlib's default
    labels every minor tick on a range of about one decade, and the labels overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0), numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def selection_figures(scores: pd.DataFrame, candidates: dict[str, dict], chosen: dict[str, dict],
                      out_dir: str | Path) -> list[str]:
    """One figure per method: the mean score against each swept value, the chosen candidate marked."""
    from ..reporting.plots import _setup, save_figure

    plt, _ = _setup()
    mean = scores.groupby("candidate")["gap"].mean()
    written = []
    for method in sorted(chosen):
        names = [n for n, c in candidates.items() if c["base"] == method and n in mean.index]
        keys = sorted({k for n in names for k, v in candidates[n].items()
                       if k != "base" and len({str(candidates[m].get(k)) for m in names}) > 1})
        keys = keys or sorted(k for k in candidates[names[0]] if k != "base")[:1]
        fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(3.2 * max(len(keys), 1), 2.8), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=False):
            xs = [candidates[n].get(key) for n in names]
            ys = [mean[n] for n in names]
            numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
            pos = xs if numeric else [sorted({str(x) for x in xs}).index(str(x)) for x in xs]
            ax.scatter(pos, ys, c=[ROUND_COLOURS[_round(n)] for n in names], s=18)
            best = chosen[method]["candidate"]
            if best in names:
                i = names.index(best)
                ax.scatter([pos[i]], [ys[i]], marker="*", s=160, c="black", zorder=3, label="chosen")
            if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
                _log_axis(ax)
            if not numeric:
                labels = sorted({str(x) for x in xs})
                ax.set_xticks(range(len(labels)), labels, rotation=30)
            ax.set_xlabel(key)
        axes[0][0].set_ylabel("selection score (lower is better)")
        fig.suptitle(figure_title(method, names), fontsize=9)
        path = Path(out_dir) / f"{method}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_figure(fig, path)
        plt.close(fig)
        written.append(str(path))
    return written

"""README's figure, drawn for the width of a README column (830 px on GitHub) from shipped results.

One panel per scenario: every method's Avg. Gap to the retrained oracle (per seed; mean and 95 %
interval over seeds), closest first, MUDA in its own colour and bold, the original as a grey square
below them, the second oracle's gap as a shaded band (the noise floor: a method inside it is as close
as an independent retraining). The gaps span two orders of magnitude (a fraction of a point for the
closest methods, tens of points for the original on a class-wise scenario), so the axis is
logarithmic and fitted to the values shown; an interval reaching below its lower end is cut there.
"""

from __future__ import annotations

from typing import Any

#: 830 px at the figure's dpi: a README column shows it unscaled
WIDTH_IN, DPI = 8.3, 100
MUDA_COLOR, PLAIN_COLOR, DA_COLOR = "#d62728", "#1f77b4", "#ff7f0e"


def avg_gap_figure(record: dict[str, Any]) -> Any:
    """The figure (a matplotlib Figure) of a run's expected results (``reproduction.load_expected``)."""
    from matplotlib.ticker import FuncFormatter

    from ..reporting.plots import _setup
    from ..reporting.tables import per_seed_values
    from ..reporting.verdicts import rank
    from .readme_tables import _methods, long_table

    plt, _ = _setup()
    scenarios = list(record["scenarios"])
    n = len(_methods(record))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(WIDTH_IN, 1.3 + 0.19 * n), dpi=DPI, squeeze=False)
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        values = per_seed_values(long_table(record, scenario))
        rows = rank(values, _methods(record))
        if values.get("original"):
            rows.append(rank(values, ["original"])[0])
        floor = rank(values, ["retrain_alt"])[0] if values.get("retrain_alt") else None
        low = max(min([r.mean for r in rows] + ([floor.mean] if floor else [])) / 2, 0.01)
        high = max(max(r.ci_high for r in rows), max(r.mean for r in rows)) * 1.5
        if floor is not None:
            ax.axvspan(low, floor.mean, color="0.8", zorder=0, label="below the second oracle's gap (noise floor)")
        for y, r in enumerate(rows):
            color = (MUDA_COLOR if r.model == "muda" else "0.45" if r.model == "original"
                     else DA_COLOR if r.model.endswith("+da") else PLAIN_COLOR)
            lo, hi = max(low, r.ci_low), max(low, r.ci_high)
            ax.errorbar(r.mean, y, xerr=[[r.mean - lo], [hi - r.mean]], fmt="s" if r.model == "original" else "o",
                        color=color, markersize=7 if r.model == "muda" else 4.5, capsize=2, elinewidth=1, zorder=3)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_yticks(range(len(rows)), [r.model for r in rows], fontsize=8)
        for label, r in zip(ax.get_yticklabels(), rows, strict=True):
            if r.model == "muda":
                label.set_fontweight("bold")
                label.set_color(MUDA_COLOR)
        ax.invert_yaxis()
        ax.set_title(f"{scenario}", fontsize=10)
        ax.set_xlabel("Avg. Gap to the oracle (log scale)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    from matplotlib.lines import Line2D

    handles, labels = axes[0][0].get_legend_handles_labels()
    for color, name in ((PLAIN_COLOR, "baseline"), (DA_COLOR, "baseline + DA"), (MUDA_COLOR, "MUDA")):
        handles.append(Line2D([0], [0], marker="o", color=color, linestyle=""))
        labels.append(name)
    fig.suptitle(f"{record['run']}: each method's Avg. Gap to the retrained oracle, lower is better "
                 f"({len(record['seeds'])} seeds, mean and 95 % interval)", fontsize=10)
    if handles:
        fig.legend(handles, labels, loc="lower center", fontsize=8, frameon=False, ncol=len(handles))
    fig.tight_layout(rect=(0, 0.04 if handles else 0, 1, 1))
    return fig

"""Figures of one scenario (seaborn; PNG + PDF). Every figure marks the retrained oracle.

- accuracy: UA / RA / TA / MIA per model, the oracle's mean as a dashed line;
- da: dimensional alignment of forget (and test) features per model, oracle as a line;
- spectra: normalised eigenvalue spectra of retain and forget features per model;
- embedding: 2-D PCA of retain / forget / test features for original, oracle and chosen methods;
- stability: forget and retain probe accuracy along each method's updates;
- tradeoff: UA vs TA and MIA vs RA, the oracle as a star;
- da_k: DA of forget and test features against the top-k retain eigenvectors, k = 1..d (first seed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.artifacts import atomic_path, read_json
from .tables import METRICS, REFERENCE_ROWS, model_label

ORACLE_COLOR = "black"


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


def _ordered(models: Sequence[str], present: set[str]) -> list[str]:
    return [m for m in models if m in present]


def _kind(model: str) -> str:
    if model == "retrain":
        return "oracle"
    if model in REFERENCE_ROWS:
        return "reference"
    return "method + DA" if model.endswith("+da") or model.startswith("muda") else "method"


KIND_COLORS = {"oracle": "black", "reference": "0.6", "method": "tab:blue", "method + DA": "tab:orange"}


def _facet_bars(data: pd.DataFrame, models: Sequence[str], metrics: Sequence[str], headers: dict[str, str],
                xlabel: str, title: str, out: str | Path, xlim: tuple[float, float] | None = None) -> None:
    """Horizontal bars, one panel per metric, one bar per model (mean ± std); oracle mean dashed."""
    plt, _ = _setup()
    present = _ordered(models, set(data["model"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 1.6, 0.9 + 0.24 * len(present)),
                             sharey=True, squeeze=False)
    y = np.arange(len(present))
    for ax, metric in zip(axes[0], metrics, strict=True):
        sub = data[data["metric"] == metric].groupby("model")["value"].agg(["mean", "std"]).fillna(0.0)
        means = [sub["mean"].get(m, np.nan) for m in present]
        stds = [sub["std"].get(m, 0.0) for m in present]
        colors = [KIND_COLORS[_kind(m)] for m in present]
        ax.barh(y, means, xerr=stds, color=colors, height=0.7, error_kw={"elinewidth": 0.8, "capsize": 1.5})
        if "retrain" in sub.index:
            ax.axvline(sub["mean"]["retrain"], color=ORACLE_COLOR, linestyle="--", linewidth=1.2)
        ax.set_title(headers.get(metric, metric))
        ax.set_xlabel(xlabel)
        if xlim:
            ax.set_xlim(*xlim)
    axes[0][0].set_yticks(y, [model_label(m) for m in present])
    axes[0][0].invert_yaxis()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=k) for k, c in KIND_COLORS.items()]
    handles.append(Line2D([0], [0], color=ORACLE_COLOR, linestyle="--", label="oracle mean"))
    fig.legend(handles=handles, loc="upper center", ncol=5, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title, y=1.0 + 0.5 / len(present))
    fig.tight_layout(rect=(0, 0, 1, 0.97 - 0.2 / len(present)))
    save_figure(fig, out)
    plt.close(fig)


def accuracy_bars(long: pd.DataFrame, models: Sequence[str], title: str, out: str | Path) -> None:
    """UA / RA / TA / MIA per model (mean ± std over seeds), the oracle's mean as a dashed line."""
    metrics = [m for m in ("UA", "RA", "TA", "TA_forgotten", "MIA") if m in set(long["metric"])]
    headers = {m: METRICS[m].header + (" = 100 − forget acc." if m == "UA" else "") for m in metrics}
    _facet_bars(long, models, metrics, headers, "percent", f"{title}: output metrics (match the dashed oracle line)",
                out, xlim=(0, 105))


def da_bars(long: pd.DataFrame, models: Sequence[str], title: str, out: str | Path) -> None:
    """DA of forget and test features per model; the oracle's value dashed."""
    metrics = [m for m in ("DA", "DA_test") if m in set(long["metric"])]
    headers = {"DA": "DA: forget vs retain eigenspace", "DA_test": "DA: test vs retain eigenspace"}
    low = float(np.nanmin(long[long["metric"].isin(metrics)]["value"])) if metrics else 0.0
    _facet_bars(long, models, metrics, headers, "share of feature energy",
                f"{title}: dimensional alignment (match the dashed oracle line)", out,
                xlim=(max(0.0, np.floor(low * 10) / 10 - 0.05), 1.0))


def spectra_grid(records: dict[str, dict], models: Sequence[str], title: str, out: str | Path) -> None:
    """Normalised eigenvalue spectra (log scale) of retain and forget features, one panel per model."""
    plt, _ = _setup()
    present = _ordered(models, set(records))
    cols = min(4, len(present))
    rows = -(-len(present) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, model in zip(axes.flat, present, strict=False):
        for part, color in (("retain", "tab:blue"), ("forget", "tab:red")):
            vals = np.asarray(records[model]["spectra"][part])
            ax.plot(np.arange(1, len(vals) + 1), np.clip(vals, 1e-8, None), color=color, label=part)
        if model != "retrain":
            for part, color in (("retain", "tab:blue"), ("forget", "tab:red")):
                ref = np.asarray(records["retrain"]["spectra"][part]) if "retrain" in records else None
                if ref is not None:
                    ax.plot(np.arange(1, len(ref) + 1), np.clip(ref, 1e-8, None), color=color, alpha=0.35,
                            linestyle=":", label=f"{part} (oracle)")
        ax.set_yscale("log")
        ax.set_title(model_label(model), fontsize=9)
    for ax in axes.flat[len(present):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("eigenvalue index")
    for ax in axes[:, 0]:
        ax.set_ylabel("eigenvalue / sum")
    handles, labels = axes.flat[min(1, len(present) - 1)].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 1.0 + 0.02 / rows))
    fig.suptitle(f"{title}: feature spectra (dotted: oracle)", y=1.04 + 0.02 / rows)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def embedding_grid(features: dict[str, dict[str, np.ndarray]], labels: np.ndarray, test_labels: np.ndarray,
                   forget: np.ndarray, retain: np.ndarray, title: str, out: str | Path, max_points: int,
                   seed: int = 0) -> None:
    """2-D PCA (fit per model on its retain features) of retain, forget and test features."""
    plt, _ = _setup()
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)

    def pick(idx: np.ndarray) -> np.ndarray:
        return np.sort(rng.permutation(idx)[:max_points]) if len(idx) > max_points else idx

    r_idx, f_idx = pick(retain), pick(forget)
    t_idx = pick(np.arange(len(test_labels)))
    names = list(features)
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        z = features[name]
        pca = PCA(n_components=2, random_state=seed).fit(z["train"][r_idx])
        for part, pts, marker, color, alpha in (
            ("retain", pca.transform(z["train"][r_idx]), ".", "tab:blue", 0.25),
            ("test", pca.transform(z["test"][t_idx]), ".", "tab:green", 0.35),
            ("forget", pca.transform(z["train"][f_idx]), "x", "tab:red", 0.8),
        ):
            ax.scatter(pts[:, 0], pts[:, 1], s=8, marker=marker, c=color, alpha=alpha, label=part, linewidths=0.8)
        ax.set_title(model_label(name) + (" ← target" if name == "retrain" else ""), fontsize=9)
        ax.set_xlabel("PC 1 (of retain features)")
        ax.set_ylabel("PC 2")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="best", frameon=True, fontsize=8, markerscale=2)
    fig.suptitle(f"{title}: features in the retain features' top-2 principal plane", y=1.03)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def stability_grid(steps: dict[str, pd.DataFrame], title: str, out: str | Path) -> None:
    """Probe accuracy on forget and retain along each method's updates (one panel per method)."""
    plt, _ = _setup()
    names = list(steps)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        df = steps[name]
        for col, color in (("forget_acc", "tab:red"), ("retain_acc", "tab:blue")):
            if col in df:
                ax.plot(df["step"], df[col], color=color, marker=".", markersize=3, label=col.replace("_acc", ""))
        ax.set_title(name, fontsize=9)
        ax.set_ylim(-3, 103)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("update step")
    for ax in axes[:, 0]:
        ax.set_ylabel("probe accuracy (%)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 1.0 + 0.02 / rows))
    fig.suptitle(f"{title}: training stability (fixed probe batches, first seed)", y=1.04 + 0.02 / rows)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def _short_label(model: str) -> str:
    return {"retrain": "oracle", "retrain_alt": "2nd oracle", "original": "original"}.get(model, model)


def _percent_limits(centre: float, half: float) -> tuple[float, float]:
    """A zoom window on a percent axis, slid to stay within [0, 100] plus a small margin."""
    margin = 0.12 * half
    lo, hi = centre - half, centre + half
    if hi > 100 + margin:
        lo, hi = lo - (hi - 100 - margin), 100 + margin
    if lo < -margin:
        lo, hi = -margin, hi + (-margin - lo)
    return lo, hi


def _zoom_half_widths(xs: np.ndarray, ys: np.ndarray, ox: float, oy: float, share: float = 0.5) -> tuple[float, float]:
    """Half-widths of a window around the oracle holding about ``share`` of the models on each axis."""
    def half(values: np.ndarray, centre: float) -> float:
        dist = np.abs(values - centre)
        return float(max(0.25, 1.3 * np.quantile(dist, share))) if len(dist) else 1.0

    return half(xs, ox), half(ys, oy)


def _label_groups(points: dict[str, tuple[float, float]], cell: tuple[float, float]) -> list[tuple[float, float, str]]:
    """Merge the labels of points that would print on top of each other (same grid cell)."""
    groups: dict[tuple[int, int], list[str]] = {}
    where: dict[tuple[int, int], tuple[float, float]] = {}
    for name, (x, y) in points.items():
        key = (int(np.floor(x / cell[0])), int(np.floor(y / cell[1])))
        groups.setdefault(key, []).append(name)
        where.setdefault(key, (x, y))
    out = []
    for key, names in groups.items():
        lines = [", ".join(names[i:i + 3]) for i in range(0, len(names), 3)]
        out.append((*where[key], "\n".join(lines)))
    return out


def clipped_error(mean: float, std: float, low: float = 0.0, high: float = 100.0) -> tuple[float, float]:
    """(below, above) lengths of a mean ± std bar cut at the metric's range: a percentage cannot
    leave [0, 100], so neither may the bar drawn for it."""
    std = 0.0 if not np.isfinite(std) else float(std)
    return max(0.0, min(std, mean - low)), max(0.0, min(std, high - mean))


# where a label may sit around its point, in points: right, left, above, below and the diagonals,
# tried near first and then further out (a leader line joins a label set further than _NEAR)
_DIRECTIONS = ((1, 0.2), (-1, 0.2), (0.3, 1), (0.3, -1.6), (1, 1), (-1, 1), (1, -1.6), (-1, -1.6))
_RADII = (5, 10, 16, 24, 34, 46, 60, 78, 100)
_NEAR = 12


def _overlap(a, b, pad: float = 1.0) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > -pad) and (min(a.y1, b.y1) - max(a.y0, b.y0) > -pad)


def place_labels(ax, labels: list[tuple[float, float, str]], points: list[tuple[float, float, float]],
                 fontsize: float = 6.5) -> list:
    """Write ``labels`` next to their points so that no two labels overlap, no label covers a
    marker and every label stays inside the axes.

    ``points``: (x, y, half the marker's size in points) of every marker drawn. Greedy and deterministic: labels are placed in order of their point (left to right), each at
    the first offset of ``_DIRECTIONS`` x ``_RADII`` whose box is free; a label that finds no free
    place takes the last one tried. Call it after the figure's layout is final: positions are
    checked in display space.
    """
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pixels = fig.dpi / 72.0
    obstacles = []
    for x, y, half in points:
        px, py = ax.transData.transform((x, y))
        r = half * pixels
        obstacles.append(Bbox.from_extents(px - r, py - r, px + r, py + r))
    placed = []
    for x, y, text in sorted(labels, key=lambda item: (item[0], item[1])):
        note = ax.annotate(text, (x, y), xytext=(0, 0), textcoords="offset points", fontsize=fontsize,
                           color="0.15", zorder=6, annotation_clip=False)
        box = None
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                note.set_position((dx * radius, dy * radius))
                note.set_horizontalalignment("left" if dx > 0 else "right" if dx < 0 else "center")
                note.set_verticalalignment("bottom" if dy > 0 else "top")
                box = note.get_window_extent(renderer)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(_overlap(box, other) for other in (*placed, *obstacles)):
                    break
            else:
                continue
            break
        if max(abs(v) for v in note.get_position()) > _NEAR:
            line = ax.annotate("", (x, y), xytext=note.get_position(), textcoords="offset points",
                               arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5, "shrinkA": 0, "shrinkB": 3})
            line.set_zorder(1)
        placed.append(box)
    return placed


def tradeoff(long: pd.DataFrame, models: Sequence[str], title: str, out: str | Path,
             pairs: Sequence[tuple[str, str]] = (("UA", "TA"), ("MIA", "RA")), subject: str = "trade-offs") -> None:
    """Draw ``tradeoff_figure`` and save it as PNG and PDF."""
    plt, _ = _setup()
    fig = tradeoff_figure(long, models, title, pairs, subject)
    save_figure(fig, out)
    plt.close(fig)


def tradeoff_figure(long: pd.DataFrame, models: Sequence[str], title: str,
                    pairs: Sequence[tuple[str, str]] = (("UA", "TA"), ("MIA", "RA")), subject: str = "trade-offs"):
    """UA vs TA and MIA vs RA (or other ``pairs`` of x, y metrics; mean ± std over seeds); the
    oracle as a black star.

    Top row: every model, labels for those outside the zoom window (dashed box). Bottom row:
    the window around the oracle, where most methods sit, with their labels (names of points
    that coincide are merged into one label).
    """
    plt, _ = _setup()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    stats = long.groupby(["model", "metric"])["value"].agg(["mean", "std"]).fillna(0.0)
    present = _ordered(models, set(long["model"]))
    pairs = [(x, y) for x, y in pairs if (present[0], x) in stats.index]
    fig, axes = plt.subplots(2, len(pairs), figsize=(6.4 * len(pairs), 10.0), squeeze=False)
    markers = {"oracle": "*", "reference": "s", "method": "o", "method + DA": "D"}
    labels = []
    for col, (xm, ym) in enumerate(pairs):
        shown = [m for m in present if (m, xm) in stats.index and (m, ym) in stats.index]
        mean = {m: (float(stats.loc[(m, xm), "mean"]), float(stats.loc[(m, ym), "mean"])) for m in shown}
        ox, oy = mean.get("retrain", next(iter(mean.values())))
        others = [m for m in shown if m != "retrain"]
        wx, wy = _zoom_half_widths(np.array([mean[m][0] for m in others]), np.array([mean[m][1] for m in others]),
                                   ox, oy)
        (x_lo, x_hi), (y_lo, y_hi) = _percent_limits(ox, wx), _percent_limits(oy, wy)
        inside = {m for m in others if x_lo <= mean[m][0] <= x_hi and y_lo <= mean[m][1] <= y_hi}
        for row, ax in enumerate(axes[:, col]):
            drawn = shown if row == 0 else ["retrain", *sorted(inside, key=shown.index)]
            for model in drawn:
                x, y = stats.loc[(model, xm)], stats.loc[(model, ym)]
                kind = _kind(model)
                xerr = np.array(clipped_error(float(x["mean"]), float(x["std"]))).reshape(2, 1)
                yerr = np.array(clipped_error(float(y["mean"]), float(y["std"]))).reshape(2, 1)
                ax.errorbar(x["mean"], y["mean"], xerr=xerr, yerr=yerr, fmt=markers[kind],
                            markersize=15 if kind == "oracle" else 6, color=KIND_COLORS[kind], capsize=2,
                            zorder=5 if kind == "oracle" else 2, alpha=0.9)
            if row == 0:
                labelled = {m: mean[m] for m in others if m not in inside}
                ax.add_patch(Rectangle((x_lo, y_lo), x_hi - x_lo, y_hi - y_lo, fill=False, linestyle="--",
                                       edgecolor="0.4", zorder=1))
                ax.set_title(f"{METRICS[ym].header} against {METRICS[xm].header}: all models "
                             f"(dashed box: zoom below)")
                cell = (max(1e-9, np.ptp([v[0] for v in mean.values()]) / 40),
                        max(1e-9, np.ptp([v[1] for v in mean.values()]) / 40))
            else:
                labelled = {m: mean[m] for m in others if m in inside}  # in model order, not set order
                ax.set_xlim(x_lo, x_hi)
                ax.set_ylim(y_lo, y_hi)
                hidden = len(others) - len(inside)
                ax.set_title(f"zoom around the oracle ({hidden} model(s) outside, see above)")
                cell = (wx / 30, wy / 30)
            if row == 0:
                ax.margins(x=0.06, y=0.1)  # room for labels above, below and beside the outermost points
            ax.autoscale_view()
            labels.append((ax, _label_groups({_short_label(m): xy for m, xy in labelled.items()}, cell),
                           [(*mean[m], 7.0 if m == "retrain" else 3.5) for m in drawn]))
            ax.set_xlabel(f"{METRICS[xm].header} (%)")
            ax.set_ylabel(f"{METRICS[ym].header} (%)")
    handles = [Line2D([0], [0], marker=markers[k], color=c, linestyle="", markersize=12 if k == "oracle" else 6,
                      label=k if k != "reference" else "original / 2nd oracle") for k, c in KIND_COLORS.items()]
    fig.legend(handles=handles, loc="upper center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 1.0))
    import textwrap

    heading = f"{title}: {subject} (closest to the black star = closest to the oracle)"
    fig.suptitle("\n".join(textwrap.wrap(heading, 75 * len(pairs))), y=1.03)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    for ax, texts, points in labels:  # last: placement is measured in the final layout
        place_labels(ax, texts, points)
    return fig


def da_k_figure(table: pd.DataFrame, summary: dict, models: Sequence[str], title: str, out: str | Path) -> None:
    """DA(k) of forget and test features, one line per model; the k where original and oracle
    differ most dotted, each model's k under the configured rule as a dot (its reported DA)."""
    plt, _ = _setup()
    form = summary["form"]
    column = f"da_{form}"
    from ..metrics.da import da_at_energy

    order = [m for m in dict.fromkeys(("original", "retrain", *models)) if m in set(table["model"])]
    sets = [s for s in ("forget", "test") if s in set(table["set"])]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 3.8), sharey=True, squeeze=False)
    palette = {"original": "0.55", "retrain": ORACLE_COLOR}
    others = iter(["tab:orange", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"])
    colors = {m: palette.get(m) or next(others, "tab:cyan") for m in order}
    best = summary["max_difference_by_k"]
    rule = summary["configured_rule"]
    for ax, which in zip(axes[0], sets, strict=True):
        for model in order:
            sub = table[(table["model"] == model) & (table["set"] == which)]
            ax.plot(sub["k"], sub[column], color=colors[model], linewidth=2.0 if model == "retrain" else 1.2,
                    label=_short_label(model))
            curve = {"retain_energy": sub["retain_energy"].to_numpy(), form: sub[column].to_numpy()}
            # the energy rule picks each model's own k from its retain spectrum
            k_rule, da_rule = ((int(rule["k"]), float(curve[form][int(rule["k"]) - 1])) if rule["k"]
                               else da_at_energy(curve, float(rule["energy"]), form))
            ax.plot([k_rule], [da_rule], "o", color=colors[model], markersize=4)
        ax.axvline(best["k"], color="0.3", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        from matplotlib.ticker import ScalarFormatter

        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("k (top retain eigenvectors kept)")
        ax.set_title(f"{which} vs retain eigenspace")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel(f"DA ({form})")
    rule_text = f"k = {rule['k']}" if rule["k"] else f"energy {rule['energy']}"
    axes[0][0].annotate(f"dotted: largest |original − oracle| on forget, k = {best['k']}\n"
                        f"(retain energy {best['retain_energy_original']:.3f} original, "
                        f"{best['retain_energy_oracle']:.3f} oracle); dots: {rule_text}",
                        (0.02, 0.02), xycoords="axes fraction", fontsize=7, color="0.25")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(6, len(order)), frameon=False, bbox_to_anchor=(0.5, 1.02))
    fig.suptitle(f"{title}: DA against the top-k retain eigenvectors (first seed)", y=1.08)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def run_plots(long_csv: str, metric_files: Sequence[str], steps_files: Sequence[str],
              embed_features: Sequence[str], data: str, split_dir: str, models: Sequence[str], title: str,
              out_dir: str, max_points: int, seed: int = 0, da_k_features: Sequence[str] = (),
              da_params: dict | None = None, da_k_out: str | None = None) -> None:
    """Every figure of one scenario into ``out_dir``; with ``da_k_features`` also the DA(k) figure
    and its data (``<da_k_out>.csv``/``.json``)."""
    from ..jobs.evaluate import load_labels
    from ..jobs.features import load_features
    from ..data.splits import load_split

    out = Path(out_dir)
    long = pd.read_csv(long_csv)
    accuracy_bars(long, models, title, out / "accuracy.png")
    da_bars(long, models, title, out / "da.png")
    tradeoff(long, models, title, out / "tradeoff.png")
    records = {}
    for path in metric_files:
        rec = read_json(path, "metrics")
        records[rec["model"]] = rec
    spectra_grid(records, models, title, out / "spectra.png")
    steps = {Path(p).name.removesuffix(".steps.csv"): pd.read_csv(p) for p in steps_files}
    stability_grid({m: steps[m] for m in models if m in steps}, title, out / "stability.png")
    labels, _ = load_labels(data)
    split = load_split(split_dir, len(labels["train"]))
    feats = {}
    for path in embed_features:
        arr = load_features(path)
        feats[Path(path).name.removesuffix(".npz")] = {"train": arr["train_features"], "test": arr["test_features"]}
    ordered = {m: feats[m] for m in ("original", "retrain") + tuple(models) if m in feats}
    embedding_grid(ordered, labels["train"], labels["test"], split.forget, split.retain, title,
                   out / "embedding.png", max_points, seed)
    if da_k_features:
        from .da_curves import run_da_k

        table, summary = run_da_k(da_k_features, split_dir, da_params or {}, seed, da_k_out or out / "da_k")
        da_k_figure(table, summary, models, title, out / "da_k.png")


def run_backdoor_figure(long_csv: str, models: Sequence[str], title: str, out: str | Path) -> None:
    """Backdoor scenarios: attack success rate against clean test accuracy, oracle marked (its ASR
    is the floor: non-target images classified as the target without learning the trigger)."""
    tradeoff(pd.read_csv(long_csv), models, title, out, pairs=(("TA", "ASR"),),
             subject="backdoor removal, ASR against clean test accuracy")


FIGURES = ("accuracy", "da", "tradeoff", "spectra", "stability", "embedding", "da_k")
__all__ = ["FIGURES", "run_backdoor_figure", "run_plots", "REFERENCE_ROWS"]

"""Aggregate per-model metric files of one scenario into tables (CSV, Markdown, LaTeX) and a summary JSON.

Rows: the retrained oracle first, then the noise-floor oracle, the original model
and the unlearning methods in config order. Cells: mean ± std over seeds. The
gap to the oracle is computed per seed (same split, same seed) and then averaged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .artifacts import read_json, write_json, write_text

ORACLE = "retrain"
# metrics whose distance to the oracle makes up the Avg. Gap
GAP_METRICS = ("UA", "RA", "TA")
# columns of the main table, in order, with their headers
COLUMNS = {
    "UA": "UA",
    "RA": "RA",
    "TA": "TA",
    "TA_remaining": "TA (rem.)",
    "TA_forgotten": "TA (forg.)",
    "avg_gap": "Avg. Gap",
    "seconds": "Time (s)",
}


def load_records(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Long table: one row per (model, seed, metric)."""
    rows = []
    for path in paths:
        rec = read_json(path, "metrics")
        for metric, value in rec["metrics"].items():
            rows.append({"model": rec["model"], "seed": rec["seed"], "scenario": rec["scenario"],
                         "metric": metric, "value": float(value) if value is not None else math.nan})
    return pd.DataFrame(rows, columns=["model", "seed", "scenario", "metric", "value"])


def add_oracle_gaps(long: pd.DataFrame, gap_metrics: Sequence[str] = GAP_METRICS) -> pd.DataFrame:
    """Append per-seed ``gap_<m>`` = |model - oracle| and ``avg_gap`` (their mean) rows."""
    wide = long.pivot_table(index=["model", "seed"], columns="metric", values="value", aggfunc="first")
    present = [m for m in gap_metrics if m in wide.columns]
    if ORACLE not in wide.index.get_level_values("model") or not present:
        return long
    oracle = wide.xs(ORACLE, level="model")[present]
    extra = []
    for (model, seed), row in wide[present].iterrows():
        if seed not in oracle.index:
            continue
        gaps = (row - oracle.loc[seed]).abs()
        for metric, gap in gaps.items():
            extra.append({"model": model, "seed": seed, "metric": f"gap_{metric}", "value": float(gap)})
        extra.append({"model": model, "seed": seed, "metric": "avg_gap", "value": float(gaps.mean())})
    scenario = long["scenario"].iloc[0] if len(long) else ""
    add = pd.DataFrame(extra).assign(scenario=scenario)
    return pd.concat([long, add], ignore_index=True)


def summarise(long: pd.DataFrame, model_order: Sequence[str]) -> pd.DataFrame:
    """Mean, std and seed count per (model, metric), models in ``model_order``."""
    grouped = long.groupby(["model", "metric"])["value"]
    stats = grouped.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                        n="count").reset_index()
    order = {m: i for i, m in enumerate(model_order)}
    stats["order"] = stats["model"].map(lambda m: order.get(m, len(order)))
    return stats.sort_values(["order", "model", "metric"]).drop(columns="order").reset_index(drop=True)


def wide_table(stats: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row per model: <metric>_mean, <metric>_std for each listed metric present."""
    models = list(dict.fromkeys(stats["model"]))
    out = pd.DataFrame({"model": models})
    for metric in columns:
        sub = stats[stats["metric"] == metric].set_index("model")
        if sub.empty:
            continue
        out[f"{metric}_mean"] = out["model"].map(sub["mean"])
        out[f"{metric}_std"] = out["model"].map(sub["std"])
    n = stats.groupby("model")["n"].max()
    out.insert(1, "seeds", out["model"].map(n).astype(int))
    return out


def _cell(mean: float, std: float, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def model_label(model: str) -> str:
    return {"retrain": "Retrain (oracle)", "retrain_alt": "Retrain, 2nd seed (noise floor)",
            "original": "Original"}.get(model, model)


def to_markdown(wide: pd.DataFrame, columns: dict[str, str], title: str = "") -> str:
    present = [m for m in columns if f"{m}_mean" in wide.columns]
    header = ["Model", "Seeds"] + [columns[m] for m in present]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for _, row in wide.iterrows():
        cells = [model_label(row["model"]), str(row["seeds"])]
        cells += [_cell(row[f"{m}_mean"], row[f"{m}_std"]) for m in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(wide: pd.DataFrame, columns: dict[str, str], caption: str = "") -> str:
    present = [m for m in columns if f"{m}_mean" in wide.columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "c" * len(present) + "}", r"\toprule",
             "Method & " + " & ".join(columns[m].replace("%", r"\%") for m in present) + r" \\", r"\midrule"]
    for _, row in wide.iterrows():
        cells = [_cell(row[f"{m}_mean"], row[f"{m}_std"]).replace("±", r"$\pm$") for m in present]
        lines.append(model_label(row["model"]).replace("_", r"\_") + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + caption + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def run_aggregate(inputs: Sequence[str], model_order: Sequence[str], scenario: str, title: str,
                  out_dir: str) -> dict[str, Any]:
    out = Path(out_dir)
    long = add_oracle_gaps(load_records(inputs))
    stats = summarise(long, model_order)
    wide = wide_table(stats, list(COLUMNS))
    write_text(out / "metrics_long.csv", long.sort_values(["model", "seed", "metric"]).to_csv(index=False))
    write_text(out / "table.csv", wide.to_csv(index=False, float_format="%.4f"))
    write_text(out / "table.md", to_markdown(wide, COLUMNS, f"{title} — {scenario}"))
    write_text(out / "table.tex", to_latex(wide, COLUMNS, f"{title}, {scenario}: mean $\\pm$ std over seeds."))
    summary = {
        model: {row["metric"]: {"mean": row["mean"], "std": row["std"]}
                for _, row in stats[stats["model"] == model].iterrows()}
        for model in dict.fromkeys(stats["model"])
    }
    write_json(out / "summary.json", {"scenario": scenario, "models": summary})
    return summary

"""Aggregate per-model metric files of one scenario into tables (CSV, Markdown, LaTeX) and a summary JSON.

Rows: the retrained oracle first, then the noise-floor oracle (a second oracle
with another seed: its gap is the retrain-vs-retrain noise floor), the original
model and the unlearning methods in config order. Cells: mean ± std over seeds;
in parentheses the gap to the oracle, computed per seed (same split, same seed)
and then averaged. Avg. Gap is SalUn's: the gaps of the seed means, averaged over
UA, RA, TA and MIA-Eff.; Avg. Gap (per seed), the mean of each seed's Avg. Gap, is
never smaller and is what the confidence intervals and paired tests use. Among the unlearning methods, the best value of each column
is bold and the second best underlined (Markdown: italic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.artifacts import read_json, write_json, write_text
from .verdicts import TEST_NAME, fmt_ci, fmt_p, mark, rank, t_interval, verdict

ORACLE = "retrain"
REFERENCE_ROWS = ("retrain", "retrain_alt", "original")
# metrics whose distance to the oracle makes up the Avg. Gap (SalUn family); class-wise, TA is the
# accuracy on the remaining classes (``evaluate.output_metrics``), as in SalUn
GAP_METRICS = ("UA", "RA", "TA", "MIA")


@dataclass(frozen=True)
class MetricInfo:
    header: str
    direction: str  # "oracle": match the oracle; "lower": lower is better
    unit: str
    digits: int = 2


METRICS: dict[str, MetricInfo] = {
    "UA": MetricInfo("UA", "oracle", "%"),
    "RA": MetricInfo("RA", "oracle", "%"),
    "TA": MetricInfo("TA", "oracle", "%"),  # class-wise: remaining classes
    "TA_forgotten": MetricInfo("TA (forg.)", "oracle", "%"),
    "TA_all": MetricInfo("TA (all)", "oracle", "%"),  # class-wise: whole test set (not in the tables)
    "MIA": MetricInfo("MIA-Eff.", "oracle", "%"),
    "avg_gap": MetricInfo("Avg. Gap", "lower", "points"),  # SalUn: |mean(model) - mean(oracle)|, averaged
    "avg_gap_seed": MetricInfo("Avg. Gap (per seed)", "lower", "points"),  # mean over seeds of the seed's gap
    "seconds": MetricInfo("Time (s)", "lower", "s"),
    "RTE": MetricInfo("RTE", "lower", "x oracle", 3),
    "DA": MetricInfo("DA (forget)", "oracle", "fraction", 3),
    "DA_test": MetricInfo("DA (test)", "oracle", "fraction", 3),
    "LP_forget": MetricInfo("LP (forget)", "oracle", "%"),
    "LP_test": MetricInfo("LP (test)", "oracle", "%"),
    "LP_test_forgotten": MetricInfo("LP (test, forg.)", "oracle", "%"),
    "NMI": MetricInfo("NMI", "oracle", "0-1", 3),
    "F1": MetricInfo("F1", "oracle", "%"),
    "MIA_loss": MetricInfo("Loss-MIA", "oracle", "%"),
    # backdoor scenarios: shown beside the Avg. Gap, not inside it
    "ASR": MetricInfo("ASR", "oracle", "%"),
    "forget_acc_clean": MetricInfo("Acc. D_f (clean)", "oracle", "%"),
}
MAIN_COLUMNS = ("UA", "RA", "TA", "TA_forgotten", "MIA", "avg_gap", "avg_gap_seed", "ASR", "forget_acc_clean",
                "seconds", "RTE")
FEATURE_COLUMNS = ("DA", "DA_test", "LP_forget", "LP_test", "LP_test_forgotten", "NMI", "F1", "MIA_loss")


def load_records(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Long table: one row per (model, seed, metric)."""
    rows = []
    for path in paths:
        rec = read_json(path, "metrics")
        for metric, value in rec["metrics"].items():
            rows.append({"model": rec["model"], "seed": rec["seed"], "scenario": rec["scenario"],
                         "metric": metric, "value": float(value) if value is not None else math.nan})
    return pd.DataFrame(rows, columns=["model", "seed", "scenario", "metric", "value"])


def most_jobs_on_device(paths: Sequence[str | Path]) -> int | None:
    """The most jobs that shared a GPU while any of these models was timed (None: none ran on the pool)."""
    seen = [(read_json(p, "metrics").get("timing") or {}).get("jobs_on_device") for p in paths]
    seen = [int(v) for v in seen if v is not None]
    return max(seen) if seen else None


def timing_legend(most: int | None) -> str:
    if most is None or most <= 1:
        return ""
    return (f" Time and RTE are wall-clock seconds measured while up to {most} jobs shared a GPU "
            "(gpu.jobs_per_device): they grow with the load; gpu.exclusive_timing: true times every "
            "training and unlearning job alone on its GPU.")


def add_oracle_gaps(long: pd.DataFrame, gap_metrics: Sequence[str] = GAP_METRICS) -> pd.DataFrame:
    """Append per-seed rows: ``gap_<m>`` = |model - oracle| for every oracle-matched metric,
    ``avg_gap_seed`` (mean of the GAP_METRICS gaps of that seed) and ``RTE`` (seconds / oracle seconds)."""
    wide = long.pivot_table(index=["model", "seed"], columns="metric", values="value", aggfunc="first")
    if ORACLE not in wide.index.get_level_values("model"):
        return long
    oracle = wide.xs(ORACLE, level="model")
    matched = [m for m in wide.columns if METRICS.get(m, MetricInfo("", "", "")).direction == "oracle"]
    extra = []
    for (model, seed), row in wide.iterrows():
        if seed not in oracle.index:
            continue
        ref = oracle.loc[seed]
        gaps = (row[matched] - ref[matched]).abs()
        for metric, gap in gaps.items():
            extra.append({"model": model, "seed": seed, "metric": f"gap_{metric}", "value": float(gap)})
        core = [gaps[m] for m in gap_metrics if m in gaps.index]
        if core:
            extra.append({"model": model, "seed": seed, "metric": "avg_gap_seed", "value": float(np.mean(core))})
        if "seconds" in row and ref.get("seconds", 0) > 0:
            extra.append({"model": model, "seed": seed, "metric": "RTE",
                          "value": float(row["seconds"] / ref["seconds"])})
    scenario = long["scenario"].iloc[0] if len(long) else ""
    return pd.concat([long, pd.DataFrame(extra).assign(scenario=scenario)], ignore_index=True)


def salun_avg_gap(long: pd.DataFrame, gap_metrics: Sequence[str] = GAP_METRICS) -> dict[str, float]:
    """model -> Avg. Gap as SalUn's tables take it: per metric |mean over seeds (model) - mean over seeds
    (oracle)|, averaged over ``gap_metrics`` (those both have). Opposite errors on two seeds cancel here,
    which is why it is never larger than the per-seed form."""
    means = long[long["metric"].isin(gap_metrics)].groupby(["model", "metric"])["value"].mean()
    if ORACLE not in means.index.get_level_values("model"):
        return {}
    oracle = means.xs(ORACLE, level="model")
    out = {}
    for model in dict.fromkeys(long["model"]):
        if model not in means.index.get_level_values("model"):
            continue
        own = means.xs(model, level="model")
        shared = [m for m in gap_metrics if m in own.index and m in oracle.index]
        gaps = [abs(own[m] - oracle[m]) for m in shared if not (math.isnan(own[m]) or math.isnan(oracle[m]))]
        if gaps:
            out[model] = float(np.mean(gaps))
    return out


def add_salun_avg_gap(stats: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """``stats`` (``summarise``) with one ``avg_gap`` row per model: SalUn's form, a value of the seed
    means, so it has no spread of its own (std and CI empty; the per-seed form carries them)."""
    values = salun_avg_gap(long)
    n = stats.groupby("model")["n"].max()
    rows = pd.DataFrame([{"model": m, "metric": "avg_gap", "mean": v, "std": math.nan, "n": int(n.get(m, 0)),
                          "ci95_low": math.nan, "ci95_high": math.nan} for m, v in values.items()],
                        columns=stats.columns)
    order = {m: i for i, m in enumerate(dict.fromkeys(stats["model"]))}
    out = pd.concat([stats, rows], ignore_index=True)
    out["order"] = out["model"].map(lambda m: order.get(m, len(order)))
    return out.sort_values(["order", "model", "metric"], kind="stable").drop(columns="order").reset_index(drop=True)


def summarise(long: pd.DataFrame, model_order: Sequence[str]) -> pd.DataFrame:
    """Mean, std, seed count and 95 % confidence interval (Student's t over seeds) per (model, metric),
    models in ``model_order``."""
    stats = long.groupby(["model", "metric"])["value"].agg(
        mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n="count",
        ci95_low=lambda v: t_interval(list(v))[0], ci95_high=lambda v: t_interval(list(v))[1]).reset_index()
    order = {m: i for i, m in enumerate(model_order)}
    stats["order"] = stats["model"].map(lambda m: order.get(m, len(order)))
    return stats.sort_values(["order", "model", "metric"]).drop(columns="order").reset_index(drop=True)


def wide_table(stats: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row per model: <metric>_mean, <metric>_std and (where defined) <metric>_gap."""
    models = list(dict.fromkeys(stats["model"]))
    out = pd.DataFrame({"model": models})
    for metric in columns:
        sub = stats[stats["metric"] == metric].set_index("model")
        if sub.empty:
            continue
        out[f"{metric}_mean"] = out["model"].map(sub["mean"])
        out[f"{metric}_std"] = out["model"].map(sub["std"])
        out[f"{metric}_ci95_low"] = out["model"].map(sub["ci95_low"])
        out[f"{metric}_ci95_high"] = out["model"].map(sub["ci95_high"])
        gap = stats[stats["metric"] == f"gap_{metric}"].set_index("model")
        if not gap.empty:
            out[f"{metric}_gap"] = out["model"].map(gap["mean"])
    n = stats.groupby("model")["n"].max()
    out.insert(1, "seeds", out["model"].map(n).astype(int))
    return out


def rank_marks(wide: pd.DataFrame, columns: Sequence[str]) -> dict[tuple[str, str], str]:
    """(model, metric) -> "best" | "second" among the unlearning methods."""
    marks: dict[tuple[str, str], str] = {}
    methods = wide[~wide["model"].isin(REFERENCE_ROWS)]
    for metric in columns:
        info = METRICS[metric]
        key = f"{metric}_gap" if info.direction == "oracle" else f"{metric}_mean"
        if key not in methods.columns:
            continue
        scores = methods.set_index("model")[key].dropna()
        distinct = sorted(set(scores.round(6)))
        for value, label in zip(distinct[:2], ("best", "second"), strict=False):
            for model in scores.index[scores.round(6) == value]:
                marks[(model, metric)] = label
    return marks


def model_label(model: str) -> str:
    return {"retrain": "Retrain (oracle)", "retrain_alt": "Retrain, 2nd seed (noise floor)",
            "original": "Original"}.get(model, model)


def _cell(row: pd.Series, metric: str, with_gap: bool) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    d = METRICS[metric].digits
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{d}f}"  # SalUn's Avg. Gap: a value of the seed means, no spread of its own
    text = f"{mean:.{d}f} ± {std:.{d}f}"
    if metric in CI_COLUMNS:
        text += " " + fmt_ci(row.get(f"{metric}_ci95_low", math.nan), row.get(f"{metric}_ci95_high", math.nan), d)
    gap = row.get(f"{metric}_gap")
    if with_gap and gap is not None and not math.isnan(gap) and row["model"] != ORACLE:
        text += f" ({gap:.{d}f})"
    return text


def _present(wide: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [m for m in columns if f"{m}_mean" in wide.columns]


def to_markdown(wide: pd.DataFrame, columns: Sequence[str], title: str = "") -> str:
    present = _present(wide, columns)
    marks = rank_marks(wide, present)
    header = ["Model", "Seeds"] + [METRICS[m].header for m in present]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for _, row in wide.iterrows():
        cells = [model_label(row["model"]), str(row["seeds"])]
        for m in present:
            text = _cell(row, m, METRICS[m].direction == "oracle")
            mark = marks.get((row["model"], m))
            cells.append(f"**{text}**" if mark == "best" else f"_{text}_" if mark == "second" else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(wide: pd.DataFrame, columns: Sequence[str], caption: str = "") -> str:
    present = _present(wide, columns)
    marks = rank_marks(wide, present)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "c" * len(present) + "}",
             r"\toprule", "Method & " + " & ".join(METRICS[m].header for m in present) + r" \\", r"\midrule"]
    for _, row in wide.iterrows():
        cells = []
        for m in present:
            text = _cell(row, m, METRICS[m].direction == "oracle").replace("±", r"$\pm$").replace("–", "--")
            mark = marks.get((row["model"], m))
            cells.append(r"\textbf{" + text + "}" if mark == "best" else
                         r"\underline{" + text + "}" if mark == "second" else text)
        lines.append(model_label(row["model"]).replace("_", r"\_") + " & " + " & ".join(cells) + r" \\")
        if row["model"] == "original":
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + caption + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


CI_COLUMNS = ("avg_gap_seed",)  # Markdown/LaTeX cells with their 95 % CI (every metric's CI is in the CSV)
LEGEND = ("Mean ± std over seeds; [low, high] = 95 % confidence interval of the mean (Student's t over "
          "seeds; every metric's interval is in table.csv and summary.json); (gap) = mean per-seed "
          "|model − oracle|. Avg. Gap = SalUn's convention: |mean over seeds of the model − mean over seeds "
          "of the oracle| per metric, averaged over UA, RA, TA and MIA-Eff. (one value, no spread); "
          "Avg. Gap (per seed) = each seed's Avg. Gap against its own oracle, averaged over seeds (never "
          "smaller; its seeds give the CI and the paired tests of the ranking). Best among the unlearning methods in bold, second best in italics (closest to the "
          "oracle; lowest for Avg. Gap, Time, RTE); see the ranking below for which differences the seeds "
          "can tell apart.")
CLASSWISE_LEGEND = " Class-wise: TA on the remaining classes (SalUn), TA (forg.) on the forgotten class."
BACKDOOR_LEGEND = (" Backdoor: D_f = the poisoned samples; UA and MIA-Eff. with the target label they were trained "
                   "with, Acc. D_f (clean) against their true labels; TA on the clean test set; ASR = triggered "
                   "test images of the other classes classified as the target (the oracle's ASR is the floor). "
                   "Avg. Gap = mean gap over UA, RA, TA and MIA-Eff. only; ASR's gap is shown beside it.")


def per_seed_values(long: pd.DataFrame, metric: str = "avg_gap_seed") -> dict[str, dict[int, float]]:
    """model -> seed -> value of one metric (the input of ``verdicts.rank``)."""
    out: dict[str, dict[int, float]] = {}
    for row in long[long["metric"] == metric].itertuples():
        if not math.isnan(row.value):
            out.setdefault(row.model, {})[int(row.seed)] = float(row.value)
    return out


def ranking_section(long: pd.DataFrame, model_order: Sequence[str], title: str) -> str:
    """The unlearning methods by Avg. Gap (per seed: a paired test needs a value per seed) with their
    95 % CIs, each compared with the lowest and with the
    noise floor (``verdicts.rank``), and the generated verdict."""
    values = per_seed_values(long)
    methods = [m for m in model_order if m not in REFERENCE_ROWS]
    floor = "retrain_alt" if "retrain_alt" in values else None
    rows = rank(values, methods, floor)
    if not rows:
        return ""
    floor_row = rank(values, [floor])[0] if floor else None
    lines = [f"### {title}: ranking by Avg. Gap (per seed)", "",
             "| Rank | Model | Seeds | Avg. Gap (per seed) | 95 % CI | p vs lowest | ≈ lowest | p vs noise floor | ≈ floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r.model} | {r.n} | {r.mean:.2f} ± {r.std:.2f} | {fmt_ci(r.ci_low, r.ci_high)} | "
                     f"{fmt_p(r.p_vs_best)} | {mark(r.tied_with_best)} | {fmt_p(r.p_vs_floor)} | {mark(r.at_floor)} |")
    lines += ["", f"≈: cannot be told apart ({TEST_NAME}).", "",
              verdict(rows, title, floor_row, focus="muda"), ""]
    return "\n".join(lines)


def published_section(summary: dict[str, Any], dataset: str, arch: str, scenario: str, title: str,
                      reference_dir: str | None, out: Path) -> str:
    """Published numbers of peer papers beside ours (``reference.py``): writes ``published.csv`` and
    returns the Markdown section where a reference matches (dataset, arch, scenario); otherwise
    returns "" and removes a ``published.csv`` left from an earlier match (it is not a declared output)."""
    from . import reference  # only aggregation reads the reference tables (the plots rules import this module)

    matched = (reference.match_references(reference.load_references(reference_dir), dataset, arch, scenario)
               if reference_dir else None)
    target = out / "published.csv"
    if matched is None or matched.empty:
        target.unlink(missing_ok=True)
        return ""
    comparison = reference.compare(matched, summary)
    write_text(target, comparison.to_csv(index=False, float_format="%.4f"))
    return reference.to_markdown(comparison, matched, summary, f"{title} — {scenario}")


def _finite(value: Any) -> float | None:
    """A number for summary.json: NaN (no spread of one seed, none for SalUn's Avg. Gap) as null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def headline(summary: dict[str, Any], muda: str = "muda") -> dict[str, Any]:
    """The few numbers a reader compares between two runs or experiments (``dvc exp show`` reads this file,
    not the full summary): each model's Avg. Gap in SalUn's form and per seed (the ranking form), the
    second oracle's (the noise floor), and MUDA's rank among the unlearning methods by the per-seed form."""
    def mean(model: str, key: str) -> float | None:
        value = (summary.get(model, {}).get(key) or {}).get("mean")
        return None if value is None else round(float(value), 4)

    models = [m for m in summary if m != ORACLE]
    per_seed = {m: mean(m, "avg_gap_seed") for m in models if mean(m, "avg_gap_seed") is not None}
    methods = sorted((m for m in per_seed if m not in REFERENCE_ROWS), key=lambda m: (per_seed[m], m))
    return {"avg_gap_per_seed": per_seed,
            "avg_gap": {m: mean(m, "avg_gap") for m in models if mean(m, "avg_gap") is not None},
            "noise_floor": per_seed.get("retrain_alt"),
            "muda_rank": methods.index(muda) + 1 if muda in methods else None,
            "methods": len(methods)}


def run_aggregate(inputs: Sequence[str], model_order: Sequence[str], scenario: str, title: str,
                  out_dir: str, dataset: str = "", arch: str = "",
                  reference_dir: str | None = None) -> dict[str, Any]:
    """Write the scenario's tables and summary; with ``reference_dir``, also the comparison with
    the published numbers that match (``dataset``, ``arch``, ``scenario``)."""
    out = Path(out_dir)
    long = add_oracle_gaps(load_records(inputs))
    stats = add_salun_avg_gap(summarise(long, model_order), long)
    main = wide_table(stats, MAIN_COLUMNS)
    feats = wide_table(stats, FEATURE_COLUMNS)
    present = set(long["metric"])
    sharing = most_jobs_on_device(inputs)
    legend = (LEGEND + (CLASSWISE_LEGEND if "TA_forgotten" in present else "")
              + (BACKDOOR_LEGEND if "ASR" in present else "") + timing_legend(sharing))
    write_text(out / "metrics_long.csv", long.sort_values(["model", "seed", "metric"]).to_csv(index=False))
    write_text(out / "table.csv", main.to_csv(index=False, float_format="%.4f"))
    write_text(out / "table_features.csv", feats.to_csv(index=False, float_format="%.4f"))
    caption = f"{title}, {scenario}. " + legend.replace("%", r"\%")
    write_text(out / "table.tex", to_latex(main, MAIN_COLUMNS, caption) + "\n"
               + to_latex(feats, FEATURE_COLUMNS, caption.replace(".", ": feature space.", 1)))
    summary = {
        model: {row["metric"]: {"mean": _finite(row["mean"]), "std": _finite(row["std"]), "n": int(row["n"]),
                                "ci95": [_finite(row["ci95_low"]), _finite(row["ci95_high"])]}
                for _, row in stats[stats["model"] == model].iterrows()}
        for model in dict.fromkeys(stats["model"])
    }
    published = published_section(summary, dataset, arch, scenario, title, reference_dir, out)
    ranking = ranking_section(long, model_order, f"{title} — {scenario}")
    write_text(out / "table.md", to_markdown(main, MAIN_COLUMNS, f"{title} — {scenario}: output metrics")
               + "\n" + legend + "\n\n" + (ranking + "\n" if ranking else "")
               + to_markdown(feats, FEATURE_COLUMNS, f"{title} — {scenario}: feature space")
               + ("\n" + published if published else ""))
    write_json(out / "summary.json", {"scenario": scenario, "models": summary,
                                      "timing": {"most_jobs_on_device": sharing}})
    write_json(out / "headline.json", headline(summary))
    return summary

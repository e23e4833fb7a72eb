"""Hyper-parameter selection on the validation split.

Each candidate (a grid point of ``tuning.grids``) is scored by its mean gap to the
retrained oracle over UA, RA, validation accuracy and MIA-Efficacy computed with
the validation set as non-members, averaged over the tuning seeds and scenarios.
Class-wise, the validation accuracy is on the remaining classes (``val_acc`` of
``evaluate.output_metrics``), as TA is in the tables (SalUn's convention): the
forgotten class is scored by UA already and would otherwise count twice, and the
candidate is then chosen by the same yardstick the tables report.
The test set is never read. The smallest score wins; the chosen values are then
copied into the profile's config by hand, with the rule cited beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .artifacts import read_json, write_json, write_text

SELECTION_METRICS = ("UA", "RA", "val_acc", "MIA_val")
RULE = ("smallest mean |candidate - oracle| over UA, RA, validation accuracy (class-wise: on the "
        "remaining classes) and MIA-Efficacy (validation set as non-members), averaged over tuning "
        "seeds and scenarios")


def score_candidates(records: Sequence[dict[str, Any]], candidates: dict[str, dict]) -> pd.DataFrame:
    """One row per (candidate, scenario, seed) with its gap; the oracle rows are the reference."""
    oracle = {(r["scenario"], r["seed"]): r["metrics"] for r in records if r["model"] == "retrain"}
    rows = []
    for rec in records:
        name = rec["model"]
        if name not in candidates:
            continue
        ref = oracle.get((rec["scenario"], rec["seed"]))
        if ref is None:
            raise ValueError(f"no oracle metrics for scenario {rec['scenario']} seed {rec['seed']}")
        gaps = [abs(rec["metrics"][m] - ref[m]) for m in SELECTION_METRICS]
        rows.append({"candidate": name, "method": candidates[name]["base"], "scenario": rec["scenario"],
                     "seed": rec["seed"], "gap": float(np.mean(gaps)),
                     **{f"gap_{m}": g for m, g in zip(SELECTION_METRICS, gaps, strict=True)}})
    return pd.DataFrame(rows)


def select(scores: pd.DataFrame, candidates: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """method -> the candidate with the smallest mean gap (ties: the first in grid order)."""
    mean = scores.groupby(["method", "candidate"])["gap"].mean().reset_index()
    chosen = {}
    for method, group in mean.groupby("method"):
        best = group.sort_values(["gap", "candidate"]).iloc[0]
        values = {k: v for k, v in candidates[best["candidate"]].items() if k != "base"}
        chosen[method] = {"candidate": best["candidate"], "score": float(best["gap"]), "values": values}
    return chosen


def run_selection(inputs: Sequence[str], candidates: dict[str, dict], out_prefix: str) -> dict:
    records = [read_json(p, "metrics") for p in inputs]
    scores = score_candidates(records, candidates)
    chosen = select(scores, candidates)
    per_scenario = scores.pivot_table(index=["method", "candidate"], columns="scenario", values="gap",
                                      aggfunc="mean")
    table = scores.groupby(["method", "candidate"])["gap"].mean().rename("score").to_frame().join(per_scenario)
    table = table.reset_index()
    table["values"] = table["candidate"].map(
        lambda c: ", ".join(f"{k}={v}" for k, v in candidates[c].items() if k != "base"))
    table["chosen"] = table.apply(lambda r: chosen[r["method"]]["candidate"] == r["candidate"], axis=1)
    write_text(f"{out_prefix}.csv", table.to_csv(index=False, float_format="%.4f"))
    lines = ["# Hyper-parameter selection (validation split)", "", f"Rule: {RULE}.", "",
             "| method | chosen values | score |", "|---|---|---|"]
    for method, c in sorted(chosen.items()):
        vals = ", ".join(f"{k}={v}" for k, v in c["values"].items())
        lines.append(f"| {method} | {vals} | {c['score']:.3f} |")
    lines += ["", "## Every candidate", "", "| method | values | score | " +
              " | ".join(str(s) for s in per_scenario.columns) + " |",
              "|---|---|---|" + "---|" * len(per_scenario.columns)]
    for _, r in table.sort_values(["method", "score"]).iterrows():
        mark = " **(chosen)**" if r["chosen"] else ""
        per = " | ".join(f"{r[s]:.3f}" for s in per_scenario.columns)
        lines.append(f"| {r['method']} | {r['values']}{mark} | {r['score']:.3f} | {per} |")
    write_text(f"{out_prefix}.md", "\n".join(lines) + "\n")
    write_json(f"{out_prefix}.json", {"rule": RULE, "chosen": chosen})
    return chosen

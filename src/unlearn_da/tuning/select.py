"""Hyper-parameter selection on the validation split.

Each candidate (a grid point of ``tuning.grids``) is scored by its mean gap to the
retrained oracle over UA, RA, validation accuracy and MIA-Efficacy computed with
the validation set as non-members, averaged over the tuning seeds and scenarios.
Class-wise, the validation accuracy is on the remaining classes (``val_acc`` of
``evaluate.output_metrics``), as TA is in the tables (SalUn's convention): the
forgotten class is scored by UA already and would otherwise count twice, and the
candidate is then chosen by the same yardstick the tables report.
The score is the per-seed form of the gap (each seed's gap to its own oracle, then averaged),
not SalUn's gap of seed means that the tables report as Avg. Gap: a candidate that overshoots
on one seed and undershoots on another would score well in SalUn's form while being unstable,
and the per-seed form is never smaller, so it cannot prefer such a candidate (``tables``).
The test set is never read. The smallest score wins; the chosen values are then
copied into the profile's config by hand, and ``tests/test_profiles.py`` checks the
config against the selection file kept in ``config/tuning/``.

The candidates come from ``search.py`` (an equal budget per method, two rounds, then the
DA weight of the "+da" variants). Besides the choice, the selection reports per method the
candidates it spent, round 2's kind (widening or refinement), a chosen value on the edge of
what was tried, and candidates that did not move the model (every selection metric equal to
the untouched original's): a figure per method plots the score against each swept value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..core.artifacts import read_json, write_json, write_text

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


NO_CHANGE_TOL = 1e-9


def no_change_candidates(records: Sequence[dict[str, Any]], candidates: dict[str, dict]) -> list[str]:
    """Candidates whose selection metrics equal the original's on every tuning scenario and seed."""
    original = {(r["scenario"], r["seed"]): r["metrics"] for r in records if r["model"] == "original"}
    seen: dict[str, bool] = {}
    for rec in records:
        ref = original.get((rec["scenario"], rec["seed"]))
        if rec["model"] not in candidates or ref is None:
            continue
        same = all(abs(rec["metrics"][m] - ref[m]) <= NO_CHANGE_TOL for m in SELECTION_METRICS)
        seen[rec["model"]] = seen.get(rec["model"], True) and same
    return sorted(name for name, same in seen.items() if same)


def edge_values(candidates: dict[str, dict], method: str, chosen_values: dict[str, Any]) -> list[str]:
    """Numeric keys whose chosen value is the smallest or largest value the method tried."""
    tried = [c for c in candidates.values() if c["base"] == method]
    out = []
    for key, value in chosen_values.items():
        values = [c[key] for c in tried if isinstance(c.get(key), (int, float)) and not isinstance(c[key], bool)]
        if len(set(values)) < 2 or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value == min(values):
            out.append(f"{key}={value} (the smallest tried)")
        elif value == max(values):
            out.append(f"{key}={value} (the largest tried)")
    return out


def all_candidates(round1: dict[str, dict], plans: Sequence[dict]) -> dict[str, dict]:
    """Every candidate by the model name it ran under; a DA-weight candidate runs as ``<name>+da``
    and counts for the method ``<base>+da``."""
    out = dict(round1)
    for plan in plans:
        for name, spec in plan["candidates"].items():
            if "da_weight" in spec:
                out[f"{name}+da"] = {**spec, "base": f"{spec['base']}+da"}
            else:
                out[name] = spec
    return out


def run_selection(inputs: Sequence[str], round1: dict[str, dict], out_prefix: str,
                  plan_files: Sequence[str] = (), figures_dir: str | None = None,
                  provenance: dict[str, Any] | None = None) -> dict:
    """Choose, and write selection.{md,csv,json}. ``provenance`` (``pipeline.tuning_provenance``: the
    search's space, budget, seeds and the code hashes of every searched method) goes into the JSON, so a
    tuned value can be checked against the code it was searched with."""
    plans = [read_json(p, "tuning plan") for p in plan_files]
    candidates = all_candidates(round1, plans)
    records = [read_json(p, "metrics") for p in inputs]
    scores = score_candidates(records, candidates)
    chosen = select(scores, candidates)
    unchanged = no_change_candidates(records, candidates)
    widening = {m: i for plan in plans for m, i in plan.get("info", {}).items()}
    for method, c in chosen.items():
        c["tried"] = sum(1 for spec in candidates.values() if spec["base"] == method)
        c["edge"] = edge_values(candidates, method, c["values"])
        c["no_change"] = sorted(n for n in unchanged if candidates[n]["base"] == method)
        if method in widening:
            c["round2"] = {k: widening[method][k] for k in ("kind", "edges")}
    per_scenario = scores.pivot_table(index=["method", "candidate"], columns="scenario", values="gap",
                                      aggfunc="mean")
    table = scores.groupby(["method", "candidate"])["gap"].mean().rename("score").to_frame().join(per_scenario)
    table = table.reset_index()
    table["values"] = table["candidate"].map(
        lambda c: ", ".join(f"{k}={v}" for k, v in candidates[c].items() if k != "base"))
    table["chosen"] = table.apply(lambda r: chosen[r["method"]]["candidate"] == r["candidate"], axis=1)
    table["no_change"] = table["candidate"].isin(unchanged)
    write_text(f"{out_prefix}.csv", table.to_csv(index=False, float_format="%.4f"))
    lines = ["# Hyper-parameter selection (validation split)", "", f"Rule: {RULE}.", "",
             *_search_lines(provenance),
             "| method | chosen values | score | tried | round 2 | edge of what was tried | no change |",
             "|---|---|---|---|---|---|---|"]
    for method, c in sorted(chosen.items()):
        vals = ", ".join(f"{k}={v}" for k, v in c["values"].items())
        r2 = c.get("round2")
        r2_text = "" if r2 is None else (r2["kind"] + (f": {'; '.join(r2['edges'])}" if r2["edges"] else ""))
        lines.append(f"| {method} | {vals} | {c['score']:.3f} | {c['tried']} | {r2_text} | "
                     f"{'; '.join(c['edge'])} | {len(c['no_change'])} |")
    lines += ["", "Round 2 *widen*: round 1's best lay in the outermost stratum of a range, so round 2 sampled "
              "beyond it; *refine*: round 2 sampled around the best. *Edge*: the chosen value is the smallest or "
              "largest value tried (the optimum may lie further out). *No change*: candidates whose UA, RA, "
              "validation accuracy and MIA equal the untouched original's (they did not move the model).",
              "", "## Every candidate", "", "| method | values | score | " +
              " | ".join(str(s) for s in per_scenario.columns) + " |",
              "|---|---|---|" + "---|" * len(per_scenario.columns)]
    for _, r in table.sort_values(["method", "score"]).iterrows():
        mark = " **(chosen)**" if r["chosen"] else ""
        flag = " (no change)" if r["no_change"] else ""
        per = " | ".join(f"{r[s]:.3f}" for s in per_scenario.columns)
        lines.append(f"| {r['method']} | {r['values']}{mark}{flag} | {r['score']:.3f} | {per} |")
    write_text(f"{out_prefix}.md", "\n".join(lines) + "\n")
    if figures_dir:
        from .figures import selection_figures

        selection_figures(scores, candidates, chosen, figures_dir)
    write_json(f"{out_prefix}.json", {"rule": RULE, "chosen": chosen, **(provenance or {})})
    return chosen


def _search_lines(provenance: dict[str, Any] | None) -> list[str]:
    """The search the selection comes from, for a reader of the Markdown (the JSON has it all)."""
    if not provenance:
        return []
    search = provenance["search"]
    lines = [f"Search: budget {search['budget']} candidates per method ({search['widen']} in round 2), search seed "
             f"{search['seed']}, tuning seeds {', '.join(map(str, search['seeds']))}, scenarios "
             f"{', '.join(search['scenarios'])}, DA weights {', '.join(map(str, search['da_weights']))}. "
             "Code hashes (method / training / scoring) per method: selection.json, `code`.", ""]
    return lines


def round1_scores(inputs: Sequence[str], round1: dict[str, dict]) -> dict[str, float]:
    """Round 1's mean score per candidate (over tuning seeds and scenarios)."""
    scores = score_candidates([read_json(p, "metrics") for p in inputs], round1)
    return {str(k): float(v) for k, v in scores.groupby("candidate")["gap"].mean().items()}


def run_plan_round2(inputs: Sequence[str], space: dict, round1: dict[str, dict], budget: int, widen: int,
                    seed: int, out: str) -> dict:
    from ..settings.search import round2

    scores = round1_scores(inputs, round1)
    candidates, info = round2(space, round1, scores, budget, widen, seed)
    plan = {"candidates": candidates, "info": info, "round1_scores": scores}
    write_json(out, plan)
    return plan


def run_plan_da(inputs: Sequence[str], round1: dict[str, dict], round2_file: str, methods: Sequence[str],
                weights: Sequence[float], out: str) -> dict:
    """The DA-weight candidates: each "+da" method's base, at the base's chosen values (rounds 1 and 2)."""
    from ..settings.search import da_round

    candidates = all_candidates(round1, [read_json(round2_file, "tuning plan")])
    chosen = select(score_candidates([read_json(p, "metrics") for p in inputs], candidates), candidates)
    plan = {"candidates": da_round(chosen, methods, weights), "weights": list(weights),
            "base_chosen": {m: chosen[m]["candidate"] for m in methods if m in chosen}}
    write_json(out, plan)
    return plan

"""The oracle-ensemble audit of one scenario: per-example KLoM and U-LiRA per model kind, the
sanity rows, the table, the per-example scores and two figures.

Inputs are the cached logits of ``jobs/audit_logits.py``: the K oracles (``retrain``, the
reference), and per table row K models: a second oracle ensemble (``retrain_alt``, differing in
initialisation and data order only), the K originals, the K models of each method.

- KLoM (``metrics/klom.py``) of a row: KL(row's margins || oracles' margins) per example, on the
  forget set, a fixed retain sample and the validation set; the table gives the median and the
  95th percentile over examples. Its floor: the pooled 2K oracles split at random into K against K
  (``resamples`` times); the floor's median and 95 % range of the median over those splits.
- U-LiRA (``metrics/ulira.py``) of a row on the forget set: leave-one-out over the K training
  seeds, AUC and TPR at each ``ulira.fpr``, 95 % bootstrap intervals over the folds.
- MIA-Efficacy (``metrics/mia.py``, SalUn's attack as in the run's tables) per model, mean over K.
- U-LiRA's floor: the same random K-vs-K splits of the pooled oracles, each scored as a row (the
  null of AUC and TPR that two exchangeable ensembles give by chance).
- Sanity (``sanity``): the second oracle ensemble must pass (U-LiRA AUC inside the null's 99 %
  range, no TPR above the null's 99.5th percentile, forget KLoM median at most the KLoM floor's
  99th percentile) and the originals must fail (AUC above the null's range, or forget KLoM above
  the floor's 99th percentile).
  A failed check is written into the table's title line and ``audit.json``, not dropped.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..core.artifacts import save_npz, write_json, write_text
from ..jobs.audit_logits import AUDIT_SETS, load_audit_logits
from ..metrics.klom import klom, margins, split_floor
from ..metrics.mia import salun_mia_efficacy
from ..metrics.ulira import auc, bootstrap_folds, leave_one_out, tpr_at
from .audit_figures import klom_figure, roc_figure

ORACLE_ROW = "retrain_alt"
ORIGINAL_ROW = "original"
ROW_LABELS = {ORACLE_ROW: "oracle (2nd ensemble)", ORIGINAL_ROW: "original"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _interval(values: np.ndarray, level: float = 95.0) -> list[float]:
    tail = (100.0 - level) / 2
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))]


def set_margins(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Margins (K, examples) of one model kind on every audit set."""
    return {s: margins(arrays[f"{s}_logits"], arrays[f"{s}_labels"]) for s in AUDIT_SETS}


def mia_efficacy(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """SalUn's MIA-Efficacy of each of the K models (class-wise: the forgotten class is dropped
    from the non-members, as in the run's metrics job)."""
    forgotten = int(arrays["forgotten_class"])
    keep = arrays["test_labels"] != forgotten if forgotten >= 0 else np.ones(len(arrays["test_labels"]), bool)
    return np.asarray([
        salun_mia_efficacy(arrays["member_logits"][k], arrays["member_labels"],
                           arrays["test_logits"][k][keep], arrays["test_labels"][keep],
                           arrays["forget_logits"][k], arrays["forget_labels"])
        for k in range(len(arrays["forget_logits"]))
    ])


def klom_floor(reference: dict[str, np.ndarray], second: dict[str, np.ndarray], params: dict[str, Any]) -> dict:
    """KLoM of oracles against oracles on each set: random K-vs-K splits of the pooled ensembles."""
    k = params["klom"]
    out = {}
    for s in AUDIT_SETS:
        pooled = np.concatenate([reference[s], second[s]])
        values = split_floor(pooled, len(reference[s]), int(params["resamples"]), int(params["seed"]),
                             bins=int(k["bins"]), eps=float(k["eps"]), clip=float(k["range"]))
        medians = np.median(values, axis=1)
        p95 = np.percentile(values, 95, axis=1)
        out[s] = {"median": float(np.mean(medians)), "median_range": _interval(medians),
                  "median_q99": float(np.percentile(medians, 99)),
                  "p95": float(np.mean(p95)), "p95_range": _interval(p95), "values": values}
    return out


def ulira_floor(reference: np.ndarray, second: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
    """U-LiRA of oracles against oracles: the pooled 2K oracles' forget margins split at random into
    K "audited" and K reference models (``resamples`` times), each split scored as a row is. Unlike
    the bootstrap over folds, which keeps the fitted ensembles fixed, this null holds what two
    ensembles of K exchangeable models give by chance (on class-wise forget sets, whole models
    differ in how they map the unseen class, so every example moves with them)."""
    pooled = np.concatenate([reference, second])
    k, min_std = len(reference), float(params["ulira"]["min_std"])
    rng = np.random.default_rng(int(params["seed"]))
    fprs = [float(f) for f in params["ulira"]["fpr"]]
    aucs, tprs = [], {f: [] for f in fprs}
    for _ in range(int(params["resamples"])):
        order = rng.permutation(len(pooled))
        pos, neg = leave_one_out(pooled[order[:k]], pooled[order[k:]], min_std)
        aucs.append(auc(pos, neg))
        for f in fprs:
            tprs[f].append(tpr_at(pos, neg, f))
    aucs_arr = np.asarray(aucs)
    return {"auc_median": float(np.median(aucs_arr)), "auc_range99": _interval(aucs_arr, 99.0), "aucs": aucs_arr,
            **{f"tpr@{f:g}_q99.5": float(np.percentile(tprs[f], 99.5)) for f in fprs}}


def score_row(name: str, row: dict[str, np.ndarray], reference: dict[str, np.ndarray],
              params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The statistics of one table row and its per-example scores."""
    k, u = params["klom"], params["ulira"]
    result: dict[str, Any] = {"model": name}
    scores: dict[str, np.ndarray] = {}
    for s in AUDIT_SETS:
        values = klom(row[s], reference[s], bins=int(k["bins"]), eps=float(k["eps"]), clip=float(k["range"]))
        scores[f"klom_{s}"] = values
        result[f"klom_{s}_median"] = float(np.median(values))
        result[f"klom_{s}_p95"] = float(np.percentile(values, 95))
    pos, neg = leave_one_out(row["forget"], reference["forget"], float(u["min_std"]))
    scores["ulira_positive"], scores["ulira_negative"] = pos, neg
    draws, seed = int(params["resamples"]), int(params["seed"])
    result["ulira_auc"] = auc(pos, neg)
    draws_auc = bootstrap_folds(pos, neg, auc, draws, seed)
    result["ulira_auc_ci"], result["ulira_auc_ci99"] = _interval(draws_auc), _interval(draws_auc, 99.0)
    for fpr in u["fpr"]:
        key = f"ulira_tpr@{fpr:g}"
        result[key] = tpr_at(pos, neg, float(fpr))
        draws_tpr = bootstrap_folds(pos, neg, lambda p, n, at=float(fpr): tpr_at(p, n, at), draws, seed)
        result[f"{key}_ci"], result[f"{key}_ci99"] = _interval(draws_tpr), _interval(draws_tpr, 99.0)
    return result, scores


def sanity(result: dict[str, Any], floor: dict, u_floor: dict[str, Any], fprs: list[float]) -> dict[str, Any]:
    """Whether the second oracle ensemble passes and the originals fail, with the reasons.

    Both are judged against the oracle-vs-oracle nulls (random K-vs-K splits of the 2K oracles):
    U-LiRA AUC inside the null's 99 % range and every TPR at most the null's 99.5th percentile,
    forget KLoM median at most the KLoM floor's 99th percentile. An audit of exchangeable oracles
    is then flagged about once in a hundred scenarios; ``null_p`` is the share of null AUCs at
    least as high as the row's.
    """
    lo, hi = u_floor["auc_range99"]
    q99 = floor["forget"]["median_q99"]
    kl, a = result["klom_forget_median"], result["ulira_auc"]
    null_p = float(np.mean(u_floor["aucs"] >= a))
    if result["model"] == ORACLE_ROW:
        problems = []
        if not lo <= a <= hi:
            problems.append(f"U-LiRA AUC {a:.3f} outside the oracle-vs-oracle 99 % range [{lo:.3f}, {hi:.3f}]")
        for fpr in fprs:
            top = u_floor[f"tpr@{fpr:g}_q99.5"]
            if result[f"ulira_tpr@{fpr:g}"] > top:
                problems.append(f"TPR at {fpr:g} FPR {result[f'ulira_tpr@{fpr:g}']:.4f} above the oracle-vs-oracle "
                                f"99.5th percentile {top:.4f}")
        if kl > q99:
            problems.append(f"forget KLoM median {kl:.3f} above the oracle floor's 99th percentile {q99:.3f}")
        return {"expect": "pass", "ok": not problems, "problems": problems, "null_p": null_p}
    if result["model"] == ORIGINAL_ROW:
        separated = a > hi or kl > q99
        problems = [] if separated else [f"U-LiRA AUC {a:.3f} inside the oracle-vs-oracle 99 % range "
                                         f"[{lo:.3f}, {hi:.3f}] and the forget KLoM median {kl:.3f} within the "
                                         f"oracle floor (99th percentile {q99:.3f}): the audit cannot tell the "
                                         "originals from oracles"]
        return {"expect": "fail", "ok": separated, "problems": problems, "null_p": null_p}
    return {}


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def table_rows(results: list[dict[str, Any]], floor: dict, fprs: list[float],
               u_floor: dict[str, Any] | None = None) -> tuple[list[str], list[list[str]]]:
    header = ["model", "MIA-Efficacy", "KLoM forget median", "KLoM forget p95", "KLoM retain median",
              "KLoM val median", "U-LiRA AUC [95 % CI]"] + [f"TPR@{100 * f:g}% FPR" for f in fprs] + ["sanity"]
    u_cells = [""] + ["" for _ in fprs]
    if u_floor:
        lo, hi = u_floor["auc_range99"]
        u_cells = [f"{u_floor['auc_median']:.3f} [{lo:.3f}, {hi:.3f}] (99 %)"] + [
            f"≤ {100 * u_floor[f'tpr@{f:g}_q99.5']:.1f} %" for f in fprs]
    rows = [["oracle floor (K vs K splits)", "", _fmt(floor["forget"]["median"]), _fmt(floor["forget"]["p95"]),
             _fmt(floor["retain"]["median"]), _fmt(floor["val"]["median"]), *u_cells, ""]]
    for r in results:
        check = r.get("sanity") or {}
        verdict = "" if not check else ("ok" if check["ok"] else "**FAILED**")
        if check:
            verdict += f" (must {check['expect']}; null p = {check['null_p']:.3f})" if "null_p" in check \
                else f" (must {check['expect']})"
        lo, hi = r["ulira_auc_ci"]
        rows.append([ROW_LABELS.get(r["model"], r["model"]),
                     f"{r['mia_efficacy']:.1f} ± {r['mia_efficacy_sd']:.1f}",
                     _fmt(r["klom_forget_median"]), _fmt(r["klom_forget_p95"]), _fmt(r["klom_retain_median"]),
                     _fmt(r["klom_val_median"]), f"{r['ulira_auc']:.3f} [{lo:.3f}, {hi:.3f}]"]
                    + [f"{100 * r[f'ulira_tpr@{f:g}']:.1f} %" for f in fprs] + [verdict])
    return header, rows


def markdown(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    lines = [f"### {title}", "", *notes, "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_audit(reference: str, inputs: list[str], rows: list[str], scenario: str, title: str,
              params: dict[str, Any], out_dir: str, code: str | None = None) -> dict[str, Any]:
    if len(inputs) != len(rows):
        raise ValueError(f"{len(inputs)} logits files for {len(rows)} rows")
    if ORACLE_ROW not in rows:
        raise ValueError(f"the audit's rows must include '{ORACLE_ROW}' (the second oracle ensemble)")
    ref_arrays = load_audit_logits(reference)
    ref = set_margins(ref_arrays)
    K = len(ref["forget"])
    kinds = {name: load_audit_logits(path) for name, path in zip(rows, inputs, strict=True)}
    for name, arrays in kinds.items():
        for s in AUDIT_SETS:
            if not np.array_equal(arrays[f"{s}_labels"], ref_arrays[f"{s}_labels"]) or \
                    len(arrays[f"{s}_logits"]) != K:
                raise ValueError(f"{name}: its {s} examples or model count differ from the oracles' "
                                 "(made by rule 'audit_logits' with other settings); rerun the audit")
    margin = {name: set_margins(arrays) for name, arrays in kinds.items()}
    floor = klom_floor(ref, margin[ORACLE_ROW], params)
    u_floor = ulira_floor(ref["forget"], margin[ORACLE_ROW]["forget"], params)
    fprs = [float(f) for f in params["ulira"]["fpr"]]
    results, per_example = [], {}
    for name in rows:
        result, scores = score_row(name, margin[name], ref, params)
        mia = mia_efficacy(kinds[name])
        result["mia_efficacy"], result["mia_efficacy_sd"] = float(mia.mean()), float(mia.std(ddof=1))
        result["sanity"] = sanity(result, floor, u_floor, fprs)
        results.append(result)
        per_example.update({f"{name}/{key}": value for key, value in scores.items()})
        log(f"audit {scenario} {name}: KLoM forget median {result['klom_forget_median']:.3f}, "
            f"U-LiRA AUC {result['ulira_auc']:.3f}, MIA-Efficacy {result['mia_efficacy']:.1f}")
    failed = [r for r in results if r["sanity"] and not r["sanity"]["ok"]]
    notes = [f"K = {K} models per row; {ref['forget'].shape[1]} forget, {ref['retain'].shape[1]} retain "
             f"(sample) and {ref['val'].shape[1]} validation examples; KLoM against the K oracles, U-LiRA on "
             "the forget set (leave-one-out over the K training seeds)."]
    notes += [f"**Sanity check failed** ({ROW_LABELS.get(r['model'], r['model'])}, must {r['sanity']['expect']}): "
              + "; ".join(r["sanity"]["problems"]) for r in failed]
    header, body = table_rows(results, floor, fprs, u_floor)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    write_text(out / "audit.md", markdown(f"{title}: {scenario}, oracle-ensemble audit", header, body, notes))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(body)
    write_text(out / "audit.csv", buf.getvalue())
    arrays = {key: np.asarray(v) for key, v in per_example.items()}
    arrays.update({f"floor/{s}": floor[s]["values"] for s in AUDIT_SETS})
    arrays["floor/ulira_auc"] = u_floor["aucs"]
    arrays["forget_index"] = ref_arrays["forget_index"]
    arrays["retain_index"] = ref_arrays["retain_index"]
    save_npz(out / "scores.npz", arrays)
    klom_figure(per_example, floor, rows, f"{title}: {scenario}", out / "figures" / "klom.png")
    roc_figure(per_example, rows, f"{title}: {scenario}", out / "figures" / "roc.png")
    summary = {
        "scenario": scenario, "K": K, "rows": results, "sanity_failed": [r["model"] for r in failed],
        "floor": {s: {k: v for k, v in floor[s].items() if k != "values"} for s in AUDIT_SETS},
        "ulira_floor": {k: v for k, v in u_floor.items() if k != "aucs"},
        "examples": {s: int(ref[s].shape[1]) for s in AUDIT_SETS},
        "params": params, "code": code,
    }
    write_json(out / "audit.json", summary)
    return summary

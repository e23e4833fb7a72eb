"""The oracle-ensemble audit of one scenario: per-example games and distances per model kind, an
oracle-vs-oracle null with permutation p-values, the sanity rows, the table, its conclusions, the
per-example scores and two figures.

Inputs are the cached logits of ``jobs/audit_logits.py``: the K oracles (``retrain``, the
reference), and per table row K models: a second oracle ensemble (``retrain_alt``), the K
originals, the K models of each method. Neither oracle ensemble shares a seed with the originals
(``pipeline.audit_oracle_seed``), so both stand in the same relation to every other row.

Per row (``metrics/ulira.py``, ``metrics/klom.py``):
- **membership** (the privacy column): under each model, forget examples against never-seen
  examples of the same distribution (random forgetting: the validation set; a forgotten class:
  its validation and test images), scored per example against the oracles (offline LiRA); AUC and
  TPR at the first ``ulira.fpr``;
- **distinguishable from the oracles**: the forget examples under the row's models against the
  same examples under oracles (leave-one-out); AUC and TPR. Not a privacy game: any move of the
  margins counts;
- **KLoM** on the forget set, a fixed retain sample and the validation set: the 95th percentile
  over examples (as the references report it) and the median.

The **null** (``null_draws`` times): the pooled 2K oracles split at random into K "audited"
against K reference models, each split scored as a row is. Each statistic of a row gets a
permutation p-value, (1 + null draws at least as large) / (1 + draws). The **sanity check** tests
the criteria ``CRITERIA`` together at the family-wise level ``alpha`` by the min-P method
(Westfall and Young): the row's smallest p-value against the distribution of the smallest
p-value over the null draws. The second ensemble must pass (adjusted p > alpha), the originals
must fail (adjusted p <= alpha). A flag is a finding, written into the table and ``audit.json``.

**Intervals** (95 %) come from ``resamples`` half-samples of models, K/2 of the row's and K/2 of the
reference oracles, without replacement, their spread centred on the estimate (:func:`bootstrap_intervals`
says why not a bootstrap with replacement). Two rows differ on a statistic only where their
intervals do not overlap; :func:`conclusions` says nothing more.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from ..core.artifacts import save_npz, write_json, write_text
from ..jobs.audit_logits import AUDIT_SETS, load_audit_logits
from ..metrics.klom import klom, margins
from ..metrics.mia import salun_mia_efficacy
from ..metrics.ulira import auc_and_tpr, leave_one_out, membership_leave_one_out
from .audit_figures import klom_figure, roc_figure

ORACLE_ROW = "retrain_alt"
ORIGINAL_ROW = "original"
ROW_LABELS = {ORACLE_ROW: "oracle (2nd ensemble)", ORIGINAL_ROW: "original"}
# the statistics the sanity check tests together (each: larger = farther from the oracles)
CRITERIA = ("membership_gap", "distinct_auc", "distinct_tpr", "klom_forget_p95")
CRITERION_TEXT = {"membership_gap": "membership |AUC - 0.5|", "membership_auc": "membership AUC",
                  "membership_tpr": "membership TPR",
                  "distinct_auc": "AUC against the oracles", "distinct_tpr": "TPR against the oracles",
                  "klom_forget_p95": "forget KLoM p95", "klom_retain_p95": "retain KLoM p95",
                  "klom_val_p95": "validation KLoM p95"}
# every statistic with a null (and so a p-value); the interval ones get model half-sample intervals
NULL_STATS = CRITERIA + ("membership_auc", "membership_tpr", "klom_retain_p95", "klom_val_p95", "klom_forget_median",
                         "klom_retain_median", "klom_val_median")
INTERVAL_STATS = ("membership_auc", "distinct_auc", "klom_forget_p95", "klom_retain_p95", "klom_val_p95")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _interval(values: np.ndarray, level: float = 95.0) -> list[float]:
    tail = (100.0 - level) / 2
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))]


# ------------------------------------------------------------------------------ margins
def heldout_mask(labels: np.ndarray, forgotten: int) -> np.ndarray:
    """Never-seen examples of the forget set's distribution: every one (random forgetting) or those of
    the forgotten class."""
    labels = np.asarray(labels)
    return np.ones(len(labels), bool) if forgotten < 0 else labels == forgotten


def set_margins(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Margins (K, examples) of one model kind on every audit set, and on the held-out examples of the
    membership game (``heldout``): the validation set, or for a forgotten class its validation and
    test images."""
    out = {s: margins(arrays[f"{s}_logits"], arrays[f"{s}_labels"]) for s in AUDIT_SETS}
    forgotten = int(arrays["forgotten_class"])
    if forgotten < 0:
        out["heldout"] = out["val"]
    else:
        parts = [margins(arrays[f"{s}_logits"], arrays[f"{s}_labels"])[:, heldout_mask(arrays[f"{s}_labels"], forgotten)]
                 for s in ("val", "test")]
        out["heldout"] = np.concatenate(parts, axis=1)
    return out


def mia_efficacy(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """SalUn's MIA-Efficacy of each of the K models (class-wise: the forgotten class is dropped
    from the non-members, as in the run's metrics job)."""
    forgotten = int(arrays["forgotten_class"])
    keep = arrays["test_labels"] != forgotten if forgotten >= 0 else np.ones(len(arrays["test_labels"]), bool)
    return np.asarray([
        salun_mia_efficacy(retain_logits=arrays["member_logits"][k], retain_labels=arrays["member_labels"],
                           nonmember_logits=arrays["test_logits"][k][keep], nonmember_labels=arrays["test_labels"][keep],
                           forget_logits=arrays["forget_logits"][k], forget_labels=arrays["forget_labels"])
        for k in range(len(arrays["forget_logits"]))
    ])


# ------------------------------------------------------------------------------ statistics of one row
def row_statistics(row: dict[str, np.ndarray], reference: dict[str, np.ndarray], params: dict[str, Any],
                   ids_row: np.ndarray | None = None, ids_ref: np.ndarray | None = None,
                   keep_scores: bool = False) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every statistic of ``row`` (margins per set, K models) against the ``reference`` oracles, and
    with ``keep_scores`` the per-example scores. ``ids_*`` name the models (a resample's draws)."""
    k, u = params["klom"], params["ulira"]
    min_std, fpr = float(u["min_std"]), float(u["fpr"][0])
    stats: dict[str, float] = {}
    kept: dict[str, np.ndarray] = {}
    # one KLoM call over the three sets' examples side by side (KLoM is per example)
    every = klom(np.concatenate([row[s] for s in AUDIT_SETS], axis=1),
                 np.concatenate([reference[s] for s in AUDIT_SETS], axis=1),
                 bins=int(k["bins"]), eps=float(k["eps"]), clip=float(k["range"]))
    ends = np.cumsum([row[s].shape[1] for s in AUDIT_SETS])
    for s, values in zip(AUDIT_SETS, np.split(every, ends[:-1]), strict=True):
        stats[f"klom_{s}_median"] = float(np.median(values))
        stats[f"klom_{s}_p95"] = float(np.percentile(values, 95))
        if keep_scores:
            kept[f"klom_{s}"] = values
    pos, neg = membership_leave_one_out(row["forget"], row["heldout"], reference["forget"], reference["heldout"],
                                        min_std)
    stats["membership_auc"], stats["membership_tpr"] = auc_and_tpr(pos, neg, fpr)
    # either way off 0.5 tells forgotten from never-seen examples: more confident on them (remembered) or
    # less (over-forgotten, a trace too)
    stats["membership_gap"] = abs(stats["membership_auc"] - 0.5)
    dpos, dneg = leave_one_out(row["forget"], reference["forget"], min_std, ids_row, ids_ref)
    stats["distinct_auc"], stats["distinct_tpr"] = auc_and_tpr(dpos, dneg, fpr)
    if keep_scores:
        kept.update({"membership_positive": pos, "membership_negative": neg,
                     "distinct_positive": dpos, "distinct_negative": dneg})
    return stats, kept


def _draw(margins_by_set: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {s: m[index] for s, m in margins_by_set.items()}


def null_statistics(reference: dict[str, np.ndarray], second: dict[str, np.ndarray], params: dict[str, Any],
                    draws: int, seed: int) -> dict[str, np.ndarray]:
    """Each statistic over ``draws`` random K-vs-K splits of the pooled 2K oracles, each split scored as
    a row is: what two ensembles of exchangeable oracles give by chance."""
    pooled = {s: np.concatenate([reference[s], second[s]]) for s in reference}
    k = len(reference["forget"])
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {name: [] for name in NULL_STATS}
    for _ in range(draws):
        order = rng.permutation(2 * k)
        stats, _ = row_statistics(_draw(pooled, order[:k]), _draw(pooled, order[k:]), params)
        for name in NULL_STATS:
            out[name].append(stats[name])
    return {name: np.asarray(v) for name, v in out.items()}


def p_value(observed: float, null: np.ndarray) -> float:
    """One-sided permutation p-value: (1 + null draws at least as large) / (1 + draws)."""
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def min_p_adjusted(observed: dict[str, float], null: dict[str, np.ndarray],
                   criteria: tuple[str, ...] = CRITERIA) -> tuple[float, dict[str, float]]:
    """The family-wise p-value of ``criteria`` together (min-P): the share of null draws whose smallest
    criterion p-value is at most the row's; and each criterion's own p-value."""
    raw = {c: p_value(observed[c], null[c]) for c in criteria}
    n = len(null[criteria[0]])
    # a null draw's own p-value per criterion: the share of draws at least as large, itself included
    null_p = np.stack([(n - np.searchsorted(np.sort(null[c]), null[c] - 1e-12, side="left")) / n for c in criteria])
    null_min = null_p.min(axis=0)
    observed_min = min(raw.values())
    return float((1 + np.sum(null_min <= observed_min + 1e-12)) / (1 + n)), raw


def bootstrap_intervals(row: dict[str, np.ndarray], reference: dict[str, np.ndarray], params: dict[str, Any],
                        draws: int, seed: int, estimate: dict[str, float] | None = None) -> dict[str, list[float]]:
    """95 % intervals of ``INTERVAL_STATS`` from ``draws`` half-samples of the row's K models and of the K
    reference oracles (K/2 distinct models of each, drawn without replacement), centred on ``estimate``
    (the statistic on every model; by default recomputed).

    Not the bootstrap with replacement: a draw that repeats a model gives KLoM's histograms fewer distinct
    values, so every bootstrap KLoM sits above the estimate (an interval of 4.40 to 5.93 around a KLoM of
    3.02). A half-sample repeats none. Its statistic scatters around its own mean as the full estimate
    scatters around its expectation (without replacement, m of K models vary as sigma^2 (K - m) / (m K),
    sigma^2 / K at m = K/2; the spread is scaled by sqrt(m / (K - m)) where m is not K/2: an odd K, or a toy
    K whose half is below the 3 models a leave-one-out fit needs), while its mean carries
    the bias of a smaller ensemble: so the interval is the estimate plus the centred half-sample spread."""
    rng = np.random.default_rng(seed)
    k_row, k_ref = len(row["forget"]), len(reference["forget"])
    # K/2 models, but at least the 3 a leave-one-out Gaussian needs (K - 1 at most, so that draws differ)
    m_row, m_ref = (min(k - 1, max(3, k // 2)) for k in (k_row, k_ref))
    if estimate is None:
        estimate, _ = row_statistics(row, reference, params)
    values: dict[str, list[float]] = {name: [] for name in INTERVAL_STATS}
    for _ in range(draws):
        ir = np.sort(rng.choice(k_row, size=m_row, replace=False))
        io = np.sort(rng.choice(k_ref, size=m_ref, replace=False))
        stats, _ = row_statistics(_draw(row, ir), _draw(reference, io), params, ids_row=ir, ids_ref=io)
        for name in INTERVAL_STATS:
            values[name].append(stats[name])
    scale = math.sqrt(m_row / (k_row - m_row))
    out = {}
    for name, v in values.items():
        spread = (np.asarray(v) - np.mean(v)) * scale
        lo, hi = _interval(spread)
        out[name] = [float(estimate[name] + lo), float(estimate[name] + hi)]
    return out


def sanity(model: str, adjusted_p: float, raw: dict[str, float], alpha: float) -> dict[str, Any]:
    """The second oracle ensemble must pass (adjusted p > alpha), the originals must fail; other rows: {}."""
    worst = ", ".join(f"{CRITERION_TEXT[c]} p = {p:.4f}" for c, p in sorted(raw.items(), key=lambda kv: kv[1]))
    if model == ORACLE_ROW:
        ok = adjusted_p > alpha
        problems = [] if ok else [f"told apart from the reference oracles: adjusted p = {adjusted_p:.4f} <= "
                                  f"alpha {alpha:g} ({worst})"]
        return {"expect": "pass", "ok": ok, "problems": problems, "p": adjusted_p}
    if model == ORIGINAL_ROW:
        ok = adjusted_p <= alpha
        problems = [] if ok else [f"the audit cannot tell the originals from oracles: adjusted p = {adjusted_p:.4f} "
                                  f"> alpha {alpha:g} ({worst})"]
        return {"expect": "fail", "ok": ok, "problems": problems, "p": adjusted_p}
    return {}


def klom_saturation(params: dict[str, Any]) -> float:
    """The KLoM above which two ensembles may share no bin at all: log(1/eps) - log(bins) (disjoint
    samples score between it and log(1/eps)); rows there cannot be ranked by KLoM."""
    k = params["klom"]
    return math.log(1.0 / float(k["eps"])) - math.log(int(k["bins"]))


def floor_summary(null: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Median, 95th and 99th percentiles and 99 % range of each null statistic."""
    return {name: {"median": float(np.median(v)), "q95": float(np.percentile(v, 95)),
                   "q99": float(np.percentile(v, 99)), "range99": _interval(v, 99.0)} for name, v in null.items()}


# ------------------------------------------------------------------------------ table and conclusions
def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _ci(r: dict[str, Any], name: str, digits: int) -> str:
    lo, hi = r["intervals"][name]
    return f"{r[name]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def table_rows(results: list[dict[str, Any]], floor: dict[str, Any], ceiling: float,
               fpr: float) -> tuple[list[str], list[list[str]]]:
    pct = f"{100 * fpr:g}%"
    header = ["model", "MIA-Efficacy", "membership AUC [95 % CI]", f"membership TPR@{pct}",
              "vs oracles AUC [95 % CI]", f"vs oracles TPR@{pct}", "KLoM forget p95 [95 % CI]",
              "KLoM forget median", "KLoM retain p95", "KLoM val p95", "p (4 criteria, min-P)", "sanity"]

    def sat(value: float, text: str) -> str:
        return text + (" ▲" if value >= ceiling else "")

    def null(name: str, digits: int = 3) -> str:
        f = floor[name]
        return f"{f['median']:.{digits}f} [{f['range99'][0]:.{digits}f}, {f['range99'][1]:.{digits}f}]"

    rows = [["oracle null (K vs K splits): median [99 % range]", "", null("membership_auc"),
             f"≤ {100 * floor['membership_tpr']['q99']:.1f} %", null("distinct_auc"),
             f"≤ {100 * floor['distinct_tpr']['q99']:.1f} %", null("klom_forget_p95", 2),
             _fmt(floor["klom_forget_median"]["median"]), null("klom_retain_p95", 2), null("klom_val_p95", 2), "", ""]]
    for r in results:
        check = r.get("sanity") or {}
        verdict = "" if not check else f"{'ok' if check['ok'] else '**FAILED**'} (must {check['expect']})"
        rows.append([ROW_LABELS.get(r["model"], r["model"]),
                     f"{r['mia_efficacy']:.1f} ± {r['mia_efficacy_sd']:.1f}",
                     _ci(r, "membership_auc", 3), f"{100 * r['membership_tpr']:.1f} %",
                     _ci(r, "distinct_auc", 3), f"{100 * r['distinct_tpr']:.1f} %",
                     sat(r["klom_forget_p95"], _ci(r, "klom_forget_p95", 2)), _fmt(r["klom_forget_median"]),
                     sat(r["klom_retain_p95"], _fmt(r["klom_retain_p95"])),
                     sat(r["klom_val_p95"], _fmt(r["klom_val_p95"])), f"{r['p_adjusted']:.4f}", verdict])
    return header, rows


def _p_text(p: float) -> str:
    return f"p = {p:.4f}"


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def conclusions(summary: dict[str, Any], label: Callable[[str], str] = lambda m: ROW_LABELS.get(m, m)) -> list[str]:
    """What the audit of one scenario shows, one sentence per row, from its numbers alone: the
    sanity rows' verdicts; per method the membership game against the oracle null and against the
    originals (only where the 95 % intervals do not overlap), whether it is told apart from the
    oracles, whether it moves retained and unseen examples too, and where KLoM saturates."""
    alpha = summary["alpha"]
    rows = {r["model"]: r for r in summary["rows"]}
    floor, ceiling = summary["null"], summary["klom_saturation"]
    orig = rows.get(ORIGINAL_ROW)
    out = []
    for r in summary["rows"]:
        name, check = label(r["model"]), r.get("sanity") or {}
        if check:
            verdicts = {("pass", True): "not told apart from the reference oracles, as an exchangeable ensemble "
                                        "must not be: sanity check passed",
                        ("pass", False): "told apart from the reference oracles though exchangeable with them: "
                                         "SANITY CHECK FAILED",
                        ("fail", True): "told apart from the oracles, as models trained on the forget set must be: "
                                        "sanity check passed",
                        ("fail", False): "not told apart from the oracles although trained on the forget set: "
                                         "SANITY CHECK FAILED, the audit has no power here"}
            line = (f"{name}: {verdicts[check['expect'], check['ok']]} (adjusted p = {check['p']:.4f}, "
                    f"family-wise alpha {alpha:g})")
            if r["model"] == ORIGINAL_ROW and r["p"]["membership_gap"] > alpha:
                line += (f"; its own membership AUC {_ci(r, 'membership_auc', 3)} is within the oracle null "
                         f"({_p_text(r['p']['membership_gap'])}): the membership game cannot find the forget set "
                         "even in models that trained on it, so it tests no method's privacy here")
            out.append(line + ".")
            continue
        p = r["p"]
        leak = p["membership_gap"] <= alpha
        remembered = r["membership_auc"] > 0.5
        parts = [f"membership AUC {_ci(r, 'membership_auc', 3)}: "
                 + ("no membership signal beyond the oracle null" if not leak else
                    "its forget examples remain identifiable as members" if remembered else
                    "its forget examples are identifiable as forgotten (less confident than never-seen ones)")
                 + f" ({_p_text(p['membership_gap'])}, two-sided)"]
        if orig is not None:
            a, b = r["intervals"]["membership_auc"], orig["intervals"]["membership_auc"]
            parts.append("not distinguishable from the originals' " + _ci(orig, "membership_auc", 3) if _overlap(a, b)
                         else ("below" if a[1] < b[0] else "above") + " the originals' " + _ci(orig, "membership_auc", 3))
        distinct = p["distinct_auc"] <= alpha
        parts.append(("told apart from the oracles" if distinct else "not told apart from the oracles")
                     + f" (AUC {r['distinct_auc']:.3f}, {_p_text(p['distinct_auc'])})")
        moved = [s for s in ("retain", "val") if p[f"klom_{s}_p95"] <= alpha]
        if moved:
            what = {"retain": "retained", "val": "unseen"}
            parts.append(f"it moves {' and '.join(what[s] for s in moved)} examples too (KLoM p95 "
                         + ", ".join(f"{s} {r[f'klom_{s}_p95']:.2f}" for s in moved)
                         + " against the null's 99th percentile "
                         + ", ".join(f"{floor[f'klom_{s}_p95']['q99']:.2f}" for s in moved) + ")")
        if r["klom_forget_p95"] >= ceiling:
            parts.append(f"its forget KLoM p95 {r['klom_forget_p95']:.2f} is at the ceiling (≥ {ceiling:.2f}), where "
                         "rows cannot be ranked")
        out.append(f"{name}: " + "; ".join(parts) + ".")
    return out


def markdown(title: str, header: list[str], rows: list[list[str]], notes: list[str], findings: list[str]) -> str:
    lines = [f"### {title}", "", *notes, "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", *(f"- {f}" for f in findings)]
    return "\n".join(lines) + "\n"


def table_notes(summary: dict[str, Any]) -> list[str]:
    e = summary["examples"]
    notes = [f"K = {summary['K']} models per row; {e['forget']} forget, {e['heldout']} held-out (never seen, same "
             f"distribution), {e['retain']} retain (sample) and {e['val']} validation examples. Null: "
             f"{summary['null_draws']} random K-vs-K splits of the 2K oracles; intervals: {summary['resamples']} "
             "half-samples of both ensembles' models (K/2 of each, centred on the estimate); p: the four criteria (membership |AUC - 0.5|, AUC and TPR "
             f"against the oracles, forget KLoM p95) together, family-wise alpha {summary['alpha']:g}. ▲ KLoM at the ceiling "
             f"(≥ {summary['klom_saturation']:.2f} nats: the two ensembles may share no bin; not ranked)."]
    for r in summary["rows"]:
        check = r.get("sanity") or {}
        if check and not check["ok"]:
            notes.append(f"**Sanity check failed** ({ROW_LABELS.get(r['model'], r['model'])}, must {check['expect']}): "
                         + "; ".join(check["problems"]))
    return notes


# ------------------------------------------------------------------------------ the job
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
        for s in (*AUDIT_SETS, "test"):
            if not np.array_equal(arrays[f"{s}_labels"], ref_arrays[f"{s}_labels"]) or \
                    len(arrays[f"{s}_logits"]) != K:
                raise ValueError(f"{name}: its {s} examples or model count differ from the oracles' "
                                 "(made by rule 'audit_logits' with other settings); rerun the audit")
    margin = {name: set_margins(arrays) for name, arrays in kinds.items()}
    draws, resamples, seed = int(params["null_draws"]), int(params["resamples"]), int(params["seed"])
    alpha = float(params["alpha"])
    null = null_statistics(ref, margin[ORACLE_ROW], params, draws, seed)
    log(f"audit {scenario}: {draws} null draws")
    results, per_example = [], {}
    for i, name in enumerate(rows):
        stats, scores = row_statistics(margin[name], ref, params, keep_scores=True)
        result: dict[str, Any] = {"model": name, **stats}
        result["p"] = {s: p_value(stats[s], null[s]) for s in NULL_STATS}
        result["p_adjusted"], _ = min_p_adjusted(stats, null)
        result["intervals"] = bootstrap_intervals(margin[name], ref, params, resamples, seed + 1 + i, estimate=stats)
        mia = mia_efficacy(kinds[name])
        result["mia_efficacy"], result["mia_efficacy_sd"] = float(mia.mean()), float(mia.std(ddof=1))
        result["sanity"] = sanity(name, result["p_adjusted"], {c: result["p"][c] for c in CRITERIA}, alpha)
        results.append(result)
        per_example.update({f"{name}/{key}": value for key, value in scores.items()})
        log(f"audit {scenario} {name}: membership AUC {stats['membership_auc']:.3f}, against the oracles "
            f"{stats['distinct_auc']:.3f}, KLoM forget p95 {stats['klom_forget_p95']:.3f}, adjusted p "
            f"{result['p_adjusted']:.4f}")
    summary = {
        "scenario": scenario, "K": K, "rows": results, "alpha": alpha, "null_draws": draws, "resamples": resamples,
        "fpr": float(params["ulira"]["fpr"][0]),
        "sanity_failed": [r["model"] for r in results if r["sanity"] and not r["sanity"]["ok"]],
        "null": floor_summary(null), "klom_saturation": klom_saturation(params),
        "examples": {s: int(ref[s].shape[1]) for s in (*AUDIT_SETS, "heldout")},
        "params": params, "code": code,
    }
    summary["conclusions"] = conclusions(summary)
    header, body = table_rows(results, summary["null"], summary["klom_saturation"], summary["fpr"])
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    write_text(out / "audit.md", markdown(f"{title}: {scenario}, oracle-ensemble audit", header, body,
                                          table_notes(summary), summary["conclusions"]))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(body)
    write_text(out / "audit.csv", buf.getvalue())
    arrays = {key: np.asarray(v) for key, v in per_example.items()}
    arrays.update({f"null/{name}": v for name, v in null.items()})
    arrays["forget_index"] = ref_arrays["forget_index"]
    arrays["retain_index"] = ref_arrays["retain_index"]
    save_npz(out / "scores.npz", arrays)
    klom_figure(per_example, summary["null"], rows, f"{title}: {scenario}", out / "figures" / "klom.png")
    roc_figure(per_example, rows, f"{title}: {scenario}", out / "figures" / "roc.png")
    write_json(out / "audit.json", summary)
    return summary

"""DA against the top-k retain eigenvectors for every k (the DA(k) figure), and the choice of the
metric's eigenspace size on the tuning seed.

Which k DA keeps decides whether it sees forgetting at all: with k = d every model scores 1, with
k = 1 only the top direction counts. Per scenario (first reported seed) the plots job writes the
curves of the original, the oracle and ``evaluation.da_k_curve.models`` to ``<scenario>/da_k.csv``
and, to ``da_k.json``, the k (and the retain-spectrum share it corresponds to) at which original
and oracle differ most. That is a report. The default rule of the metric (``evaluation.da.energy``)
is chosen separately, by :func:`run_choose_energy` (``make da-energy``), on the TRAINING features
(retain and forget) of the TUNING seeds only: never a reported seed, never the test set.
Pure numpy on cached features; the retain subset is the one ``evaluate.feature_metrics`` draws.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.artifacts import atomic_path, write_json, write_text
from ..jobs.features import load_features
from ..metrics.da import FORMS, alignment_curves, da_at_energy, separating_rule
from ..data.splits import load_split


def retain_subset(retain: np.ndarray, max_retain: int, seed: int) -> np.ndarray:
    """The retain rows DA uses: all, or the fixed random subset ``evaluate.feature_metrics`` draws."""
    if len(retain) <= int(max_retain):
        return retain
    return np.sort(np.random.default_rng(seed).permutation(retain)[: int(max_retain)])


def model_curves(train_features: np.ndarray, test_features: np.ndarray | None, forget: np.ndarray,
                 retain_sub: np.ndarray, center: bool) -> dict[str, dict[str, np.ndarray]]:
    """{"forget": curves, "test": curves} of one model (test left out when ``test_features`` is None)."""
    zr = train_features[retain_sub]
    out = {"forget": alignment_curves(train_features[forget], zr, center)}
    if test_features is not None:
        out["test"] = alignment_curves(test_features, zr, center)
    return out


def curves_table(curves: dict[str, dict[str, dict[str, np.ndarray]]]) -> pd.DataFrame:
    """Long table: model, set, k, retain_energy, da_frobenius, da_energy."""
    frames = []
    for model, by_set in curves.items():
        for which, c in by_set.items():
            frames.append(pd.DataFrame({"model": model, "set": which, "k": c["k"],
                                        "retain_energy": c["retain_energy"],
                                        "da_frobenius": c["frobenius"], "da_energy": c["energy"]}))
    return pd.concat(frames, ignore_index=True)


def separation_summary(curves: dict[str, dict[str, dict[str, np.ndarray]]], form: str, energy: float,
                       k: int | None) -> dict[str, Any]:
    """Where original and oracle differ most on the forget set, and their DA at the configured rule."""
    orig, oracle = curves["original"]["forget"], curves["retrain"]["forget"]
    rule = separating_rule([(orig, oracle)], form)
    best_k = rule["by_k"]["k"]
    configured = {}
    for name, c in (("original", orig), ("retrain", oracle)):
        kk, value = (k, float(c[form][k - 1])) if k else da_at_energy(c, energy, form)
        configured[name] = {"k": int(kk), "da": value, "retain_energy": float(c["retain_energy"][kk - 1])}
    return {
        "form": form,
        "max_difference_by_k": {
            "k": best_k,
            "difference": rule["by_k"]["mean_abs_difference"],
            "da_original": float(orig[form][best_k - 1]),
            "da_oracle": float(oracle[form][best_k - 1]),
            "retain_energy_original": float(orig["retain_energy"][best_k - 1]),
            "retain_energy_oracle": float(oracle["retain_energy"][best_k - 1]),
        },
        "max_difference_by_energy": {
            "energy": rule["by_energy"]["energy"],
            "difference": rule["by_energy"]["mean_abs_difference"],
            "k_original": rule["by_energy"]["k_original"][0],
            "k_oracle": rule["by_energy"]["k_oracle"][0],
        },
        "configured_rule": {"energy": energy, "k": k, **configured},
    }


def run_da_k(feature_files: Sequence[str | os.PathLike], split_dir: str, da_cfg: dict[str, Any], seed: int,
             out_prefix: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Curves of every model in ``feature_files`` (one scenario, one seed) -> ``<out_prefix>.csv/.json``.

    ``feature_files`` must include ``original.npz`` and ``retrain.npz``.
    """
    form = str(da_cfg.get("form", "frobenius"))
    feats = {Path(p).name.removesuffix(".npz"): load_features(p) for p in feature_files}
    missing = {"original", "retrain"} - set(feats)
    if missing:
        raise ValueError(f"DA(k) curves need the features of {sorted(missing)}")
    n_train = len(next(iter(feats.values()))["train_features"])
    split = load_split(split_dir, n_train)
    retain_sub = retain_subset(split.retain, int(da_cfg["max_retain"]), seed)
    center = bool(da_cfg["center"])
    curves = {m: model_curves(a["train_features"], a["test_features"], split.forget, retain_sub, center)
              for m, a in feats.items()}
    table = curves_table(curves)
    summary = {
        "scenario": split.scenario, "seed": split.seed, "models": list(feats), "center": center,
        "max_retain": int(da_cfg["max_retain"]), "feature_dim": int(len(curves["original"]["forget"]["k"])),
        **separation_summary(curves, form, float(da_cfg["energy"]), da_cfg.get("k")),
        "note": "a report from the first reported seed; the metric's default energy is chosen by "
                "`make da-energy` on the tuning seed's training features only",
    }
    out_prefix = Path(out_prefix)
    with atomic_path(out_prefix.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_json(out_prefix.with_suffix(".json"), summary)
    return table, summary


def choose_energy(pairs: Sequence[dict[str, Any]], da_cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """The ``energy`` rule that best separates original from oracle on TRAINING features.

    ``pairs``: {scenario, seed, original, oracle, split} per (tuning scenario, tuning seed), the
    feature files of the original and the retrained oracle of that seed and the split folder. Only
    ``train_features`` rows of D_f and D_r are read (the retain subset as the metric draws it).
    """
    form = str(da_cfg.get("form", "frobenius"))
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    center, max_retain = bool(da_cfg["center"]), int(da_cfg["max_retain"])
    curve_pairs, where = [], []
    for pair in pairs:
        z_orig = load_features(pair["original"])["train_features"]
        z_oracle = load_features(pair["oracle"])["train_features"]
        split = load_split(pair["split"], len(z_orig))
        retain_sub = retain_subset(split.retain, max_retain, seed)
        curve_pairs.append((model_curves(z_orig, None, split.forget, retain_sub, center)["forget"],
                            model_curves(z_oracle, None, split.forget, retain_sub, center)["forget"]))
        where.append({"scenario": pair["scenario"], "seed": int(pair["seed"])})
    rule = separating_rule(curve_pairs, form)
    per_pair = []
    for (o, r), w in zip(curve_pairs, where, strict=True):
        tau = rule["by_energy"]["energy"]
        (ko, dao), (kr, dar) = da_at_energy(o, tau, form), da_at_energy(r, tau, form)
        per_pair.append({**w, "k_original": ko, "k_oracle": kr, "da_original": dao, "da_oracle": dar})
    return {"form": form, "center": center, "max_retain": max_retain, "pairs": where,
            "chosen_energy": rule["by_energy"]["energy"], "chosen_k": rule["by_k"]["k"],
            "at_chosen_energy": per_pair, "rule": rule,
            "criterion": "max over energy (and, separately, over a fixed k) of the mean over tuning "
                         "scenarios and seeds of |DA_original - DA_oracle| on training forget features "
                         "against the retain eigenspace; ties to the smaller value"}


def run_choose_energy(pairs: Sequence[dict[str, Any]], da_cfg: dict[str, Any], seed: int,
                      out_prefix: str | os.PathLike, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`choose_energy`, written to ``<out_prefix>.json`` (with ``provenance``: the seeds, scenarios and
    code hashes it was chosen with, ``pipeline.da_energy_provenance``) and a short ``.md`` for the config."""
    result = {**choose_energy(pairs, da_cfg, seed), **(provenance or {})}
    out_prefix = Path(out_prefix)
    write_json(out_prefix.with_suffix(".json"), result)
    lines = [
        "# Eigenspace size of the DA metric, chosen on the tuning seed",
        "",
        f"Criterion: {result['criterion']}. Form `{result['form']}`, center {result['center']}.",
        "",
        f"**energy: {result['chosen_energy']}** (mean |difference| "
        f"{result['rule']['by_energy']['mean_abs_difference']:.4f}); as a fixed size: k = {result['chosen_k']} "
        f"(mean |difference| {result['rule']['by_k']['mean_abs_difference']:.4f}).",
        "",
        "| scenario | seed | k original | k oracle | DA original | DA oracle |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {p['scenario']} | {p['seed']} | {p['k_original']} | {p['k_oracle']} | {p['da_original']:.4f} | "
              f"{p['da_oracle']:.4f} |" for p in result["at_chosen_energy"]]
    lines += ["", "Copy the energy into `evaluation.da.energy` of the profile, marked (ours), citing this file."]
    write_text(out_prefix.with_suffix(".md"), "\n".join(lines) + "\n")
    return result

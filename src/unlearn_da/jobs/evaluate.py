"""Job: every per-model metric of one (model, scenario, seed), from cached features; no torch.

The output JSON holds flat metric values; aggregation and the oracle gaps come later
(``tables``), because they need every model of a seed together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.artifacts import environment_record, load_npz, read_json, verify_artifact, write_json
from ..data.backdoor import attack_success_rate
from ..core.errors import ArtifactError
from .features import load_features, rule_for_model
from ..core.kernels import single_threaded_libraries
from ..metrics.accuracy import accuracy, classwise_accuracy, unlearning_accuracy
from ..metrics.da import dimensional_alignments, normalized_spectrum
from ..metrics.clustering import clustering_scores
from ..metrics.mia import loss_mia_accuracy, salun_mia_efficacy
from ..metrics.probe import holdout_split, linear_probe
from ..data.splits import load_split


def timing_of(meta: dict[str, Any]) -> dict[str, Any]:
    """Whether the model's wall-clock seconds were measured alone on their GPU: the most jobs seen on
    the device at the job's start and end (its sidecar's ``device_slot``); None off the GPU pool."""
    slot = (meta.get("environment") or {}).get("device_slot")
    if not slot:
        return {"jobs_on_device": None, "exclusive": None}
    most = max(int(slot.get("jobs_on_device_at_start") or 1), int(slot.get("jobs_on_device_now") or 1))
    return {"jobs_on_device": most, "exclusive": bool(slot.get("exclusive"))}


def load_labels(data: str) -> tuple[dict[str, np.ndarray], int]:
    """Only the label arrays of a prepared data set (npz members load lazily), and the class count."""
    meta = verify_artifact(data, "prepare_data")
    arrays = load_npz(data, "prepare_data", "prepared data set")
    missing = [f"y_{s}" for s in ("train", "val", "test") if f"y_{s}" not in arrays]
    if missing:
        raise ArtifactError(f"{data}: missing arrays {missing} (made by rule 'prepare_data')")
    return {s: arrays[f"y_{s}"] for s in ("train", "val", "test")}, int(meta["num_classes"])


def mia_metrics(arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], forget: np.ndarray,
                retain: np.ndarray, forgotten_class: int | None, folds: int, seed: int) -> dict[str, float]:
    """MIA-Efficacy (test as non-members: the reported column; val: for hyper-parameter selection)
    and the loss attack. Class-wise: SalUn drops the forgotten class from the non-members; the loss
    attack (ours) compares D_f with the test samples of the forgotten class, its unseen twins."""
    y = labels["train"]
    logits = arrays["train_logits"]
    out = {}
    for name, split in (("MIA", "test"), ("MIA_val", "val")):
        nl, ny = arrays[f"{split}_logits"], labels[split]
        if forgotten_class is not None:
            keep = ny != forgotten_class
            nl, ny = nl[keep], ny[keep]
        out[name] = salun_mia_efficacy(retain_logits=logits[retain], retain_labels=y[retain], nonmember_logits=nl,
                                       nonmember_labels=ny, forget_logits=logits[forget], forget_labels=y[forget])
    nl, ny = arrays["test_logits"], labels["test"]
    if forgotten_class is not None:
        keep = ny == forgotten_class
        nl, ny = nl[keep], ny[keep]
    out["MIA_loss"] = loss_mia_accuracy(forget_logits=logits[forget], forget_labels=y[forget], nonmember_logits=nl,
                                        nonmember_labels=ny, folds=folds, seed=seed)
    return out


def feature_metrics(arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], forget: np.ndarray,
                    retain: np.ndarray, forgotten_class: int | None, num_classes: int,
                    cfg: dict[str, Any]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """DA (forget and test vs retain), linear probe, clustering; plus the normalised spectra.

    The probe trains on D_r (``probe.train: retain``, the random-forgetting default) and then
    scores all of D_f; or, when it must see D_f's class to predict it (``train``, the class-wise
    default), on D_r plus a seeded half of D_f, and ``LP_forget`` scores only the other half:
    its accuracy on its own training samples would measure memorisation by the probe.
    ``LP_test_forgotten`` (class-wise) scores the forgotten class's test samples."""
    seed = int(cfg["seed"])
    z, y = arrays["train_features"], labels["train"]
    rng = np.random.default_rng(seed)
    da_cfg = cfg["da"]
    retain_sub = retain
    if len(retain_sub) > int(da_cfg["max_retain"]):
        retain_sub = np.sort(rng.permutation(retain)[: int(da_cfg["max_retain"])])
    zr, zf, zt = z[retain_sub], z[forget], arrays["test_features"]
    da_kwargs = {"energy": float(da_cfg["energy"]), "k": da_cfg["k"], "center": bool(da_cfg["center"])}
    # DA / DA_test in the configured form, and both forms by name so a reader can compare
    da_f, da_t = dimensional_alignments(zf, zr, **da_kwargs), dimensional_alignments(zt, zr, **da_kwargs)
    form = da_cfg.get("form", "frobenius")
    out = {"DA": da_f[form], "DA_test": da_t[form],
           **{f"DA_{f}": v for f, v in da_f.items()}, **{f"DA_test_{f}": v for f, v in da_t.items()}}

    probe_cfg = cfg["probe"]
    train_on = probe_cfg["train"]
    if train_on == "auto":
        train_on = "train" if forgotten_class is not None else "retain"
    if train_on == "train":  # the probe must see D_f's class(es): it scores only a held-out part of D_f
        fit_forget, scored_forget = holdout_split(forget, seed=seed)
        train_idx = np.sort(np.concatenate([retain, fit_forget]))
    else:
        train_idx, scored_forget = retain, forget
    eval_sets = {"forget": (z[scored_forget], y[scored_forget]), "test": (zt, labels["test"])}
    if forgotten_class is not None:
        mask = labels["test"] == forgotten_class
        eval_sets["test_forgotten"] = (zt[mask], labels["test"][mask])
    lp = linear_probe(z[train_idx], y[train_idx], eval_sets, max_train=int(probe_cfg["max_train"]),
                      c=float(probe_cfg["C"]), seed=seed)
    out.update({f"LP_{name}": value for name, value in lp.items()})

    n_init = int(cfg["clustering"]["n_init"])
    if forgotten_class is None:
        scores = clustering_scores(zf, y[forget], num_classes, seed=seed, n_init=n_init)
    else:  # one label in D_f: cluster D_f with the test set, score the forgotten class's cluster (ours)
        scores = clustering_scores(np.concatenate([zf, zt]), np.concatenate([y[forget], labels["test"]]),
                                   num_classes, focus_class=forgotten_class, seed=seed, n_init=n_init)
    out["NMI"] = scores["nmi"]
    out["F1"] = scores.get("f1_focus", scores["f1"])
    top = int(cfg["spectrum_top"])
    spectra = {"retain": normalized_spectrum(zr, top, da_kwargs["center"]),
               "forget": normalized_spectrum(zf, top, da_kwargs["center"])}
    return out, spectra


def output_metrics(arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                   forget: np.ndarray, retain: np.ndarray, forgotten_class: int | None) -> dict[str, float]:
    """UA, RA, TA and the validation accuracy (tuning) in SalUn's convention.

    Class-wise, SalUn drops the forgotten class from the test set (its data loaders keep
    ``targets != class_to_replace``), so ``TA`` and ``val_acc`` are accuracies on the remaining
    classes: they measure only what the model should keep, and the forgotten class (scored by UA
    already) does not enter the Avg. Gap or the tuning score a second time. The forgotten class
    gets its own ``TA_forgotten`` / ``val_acc_forgotten``; ``TA_all`` is the
    whole test set, for comparison with papers that report that. Random forgetting: whole sets.
    """
    y = labels["train"]
    logits = arrays["train_logits"]
    out = {
        "forget_acc": accuracy(logits[forget], y[forget]),
        "UA": unlearning_accuracy(logits[forget], y[forget]),
        "RA": accuracy(logits[retain], y[retain]),
    }
    if forgotten_class is None:
        out["TA"] = accuracy(arrays["test_logits"], labels["test"])
        out["val_acc"] = accuracy(arrays["val_logits"], labels["val"])
    else:
        out["TA_forgotten"], out["TA"] = classwise_accuracy(arrays["test_logits"], labels["test"], forgotten_class)
        out["TA_all"] = accuracy(arrays["test_logits"], labels["test"])
        out["val_acc_forgotten"], out["val_acc"] = classwise_accuracy(
            arrays["val_logits"], labels["val"], forgotten_class)
    return out


def backdoor_labels(labels: dict[str, np.ndarray], forget: np.ndarray, target: int) -> dict[str, np.ndarray]:
    """The labels the models were trained with: the poisoned forget samples carry the target label."""
    train = labels["train"].copy()
    train[forget] = target
    return {**labels, "train": train}


def backdoor_metrics(arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray], forget: np.ndarray,
                     target: int, features: str) -> dict[str, float]:
    """ASR on the triggered non-target test images, and the forget set's accuracy against its clean
    labels (UA and MIA use the poisoned labels the original was trained with)."""
    if "trigger_logits" not in arrays:
        raise ArtifactError(f"{features}: no trigger_logits; features of a backdoor scenario are extracted "
                            "with its split (the job that made the model, --split)")
    return {"ASR": attack_success_rate(arrays["trigger_logits"], target),
            "forget_acc_clean": accuracy(arrays["train_logits"][forget], labels["train"][forget])}


def run_metrics(data: str, split_dir: str, features: str, model_meta: str, model: str,
                scenario: str, seed: int, params: dict[str, Any], out: str, code: str | None = None) -> dict[str, Any]:
    with single_threaded_libraries(params.get("cpu_kernels", "portable")):
        record = compute_metrics(data, split_dir, features, model_meta, model, scenario, seed, params, code)
    write_json(out, record)
    return record


def compute_metrics(data: str, split_dir: str, features: str, model_meta: str, model: str,
                    scenario: str, seed: int, params: dict[str, Any], code: str | None = None) -> dict[str, Any]:
    """Every metric of one model, and what made them (the metrics file's content)."""
    labels, num_classes = load_labels(data)
    split = load_split(split_dir, len(labels["train"]), labels["train"], data)
    arrays = load_features(features, {s: len(y) for s, y in labels.items()}, num_classes)
    meta = read_json(model_meta, rule_for_model(model))
    trained = labels if split.backdoor is None else backdoor_labels(labels, split.forget, int(split.backdoor["target"]))
    args = (trained, split.forget, split.retain, split.forgotten_class)
    metrics = output_metrics(arrays, *args)
    metrics.update(mia_metrics(arrays, *args, folds=int(params["mia"]["loss_folds"]), seed=int(params["seed"])))
    # feature-space metrics score the forget features against their true classes (probe, clustering)
    feats, spectra = feature_metrics(arrays, labels, split.forget, split.retain, split.forgotten_class,
                                     num_classes, params)
    metrics.update(feats)
    if split.backdoor is not None:
        metrics.update(backdoor_metrics(arrays, labels, split.forget, int(split.backdoor["target"]), features))
    metrics["seconds"] = float(meta["seconds"])
    record = {
        "model": model,
        "scenario": scenario,
        "seed": seed,
        "forgotten_class": split.forgotten_class,
        "backdoor": split.backdoor,
        "n_forget": int(len(split.forget)),
        "n_retain": int(len(split.retain)),
        "metrics": metrics,
        "spectra": spectra,
        "params": params,
        "code": code,
        "environment": environment_record(),
        # how many jobs shared the GPU while the model's seconds were measured (None off a GPU pool)
        "timing": timing_of(meta),
    }
    return record

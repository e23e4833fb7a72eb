"""Expected results: what a finished run made, per model and seed, and the check of a run against them.

The project ships one small JSON file per CPU profile (``expected/<run>.json``, ``expected/tiny.json``
for the test config), made in portable mode (``kernels.py``): every model's checkpoint and feature
checksums and every metric value of every seed. ``check-reproduction`` compares a finished run with
it and says, per model and seed, identical or different (with the largest differences), so anyone
can tell whether their machine reproduced the project's numbers to the bit. The README's result
tables are generated from these files (``readme_tables.py``), never typed.

Wall-clock values (``seconds``, and RTE, which divides them) depend on the machine and its load, so
they are kept for the tables but left out of the comparison.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from .. import pipeline as P
from ..core.artifacts import read_json, sha256_file, write_json
from ..core.errors import ArtifactError

FORMAT = 1
MACHINE_DEPENDENT = ("seconds",)  # not compared; RTE is computed from them
DEFAULT_DIR = "expected"


def config_digest(config: dict) -> str:
    """SHA-256 of the resolved config (canonical JSON): the same digest, the same run definition.

    Keys that say where jobs run, not what they compute (``P.EXECUTION_KEYS``), are left out."""
    definition = {k: v for k, v in config.items() if k not in P.EXECUTION_KEYS}
    return hashlib.sha256(P.as_json(definition).encode()).hexdigest()


def expected_path(config: dict, directory: str | Path = DEFAULT_DIR) -> Path:
    return Path(directory) / f"{P.run_name(config)}.json"


def model_key(scenario: str, seed: int | str, model: str) -> str:
    """``<scenario>/seed<s>/<model>``; the per-seed original shared by the clean scenarios is
    ``seed<s>/original``."""
    return f"{scenario}/seed{seed}/{model}" if scenario else f"seed{seed}/{model}"


def collect(config: dict, overlays: list[str], root: str | Path = ".", strict: bool = True) -> dict[str, Any]:
    """The expected-results record of a finished run: checksums and metrics of every model and seed.

    Checksums are computed from the files (a replaced file does not match its sidecar's). With
    ``strict`` a missing file is an error naming it (a record describes a whole run); without, the
    model's entry lists what is missing, and the check reports it as missing.
    """
    root = Path(root)
    run = P.run_name(config)
    models: dict[str, dict[str, Any]] = {}
    made_on: dict[str, Any] | None = None

    def entry(scenario: str, seed: int, model: str) -> dict[str, Any]:
        return models.setdefault(model_key(scenario, seed, model), {})

    def present(e: dict[str, Any], rel: str) -> Path | None:
        path = root / rel
        if path.exists():
            return path
        if strict:
            raise ArtifactError(f"{rel}: not found; finish the run first (make reproduce{_profile_arg(overlays)})")
        e.setdefault("missing_files", []).append(rel)
        return None

    def checksums(e: dict[str, Any], scenario: str, seed: int, model: str) -> Path | None:
        ckpt = present(e, P.model_checkpoint(run, scenario, seed, model))
        feats = present(e, P.model_features(run, scenario, seed, model))
        if ckpt is not None:
            e["checkpoint"] = sha256_file(ckpt)
        if feats is not None:
            e["features"] = sha256_file(feats)
        return ckpt

    audit = P.audit_enabled(config)
    audits: dict[str, Any] = {}
    if audit:
        for scenario in config["audit"]["scenarios"]:
            summary_file = present(entry(f"audit/{scenario}", 0, "summary"),
                                   f"results/{run}/audit/{scenario}/audit.json")
            models.pop(model_key(f"audit/{scenario}", 0, "summary"), None)
            summary = read_json(summary_file, "audit") if summary_file is not None else None
            if summary is not None:
                audits[scenario] = {k: summary[k] for k in ("K", "examples", "null", "klom_saturation", "alpha", "fpr",
                                                            "null_draws", "resamples", "rows", "sanity_failed",
                                                            "conclusions")}
            rows = {r["model"]: r for r in summary["rows"]} if summary is not None else {}
            for model in ["retrain", *P.audit_rows(config)]:
                e = models.setdefault(f"audit/{scenario}/{model}", {})
                logits = present(e, P.audit_logits_file(run, scenario, model))
                if logits is not None:
                    e["features"] = sha256_file(logits)
                if model in rows:
                    e["metrics"] = {k: _number(v) for k, v in sorted(rows[model].items()) if _number(v) is not None}
        seeds, scenarios = P.audit_train_seeds(config), config["audit"]["scenarios"]
        kinds = ["retrain", "retrain_alt", *config["audit"]["methods"]]
        artifacts = [P.audit_checkpoint(run, "", t, "original") for t in seeds]
        artifacts += [P.audit_checkpoint(run, s, t, m) for s in scenarios for t in seeds for m in kinds]
        artifacts += [P.audit_logits_file(run, s, m) for s in scenarios for m in ["retrain", *P.audit_rows(config)]]
        sidecars = [root / f"{a}.meta.json" for a in artifacts]
        made = [read_json(m, "audit").get("created_unix") for m in sidecars if m.exists()]
        made = [t for t in made if isinstance(t, (int, float))]
        if made:  # wall clock of the audit's own jobs, from the first artifact written to the last
            audits["_run"] = {"artifacts": len(made), "first_to_last_s": round(max(made) - min(made), 1)}
        first = P.audit_checkpoint(run, config["audit"]["scenarios"][0], 0, "retrain") + ".meta.json"
        if made_on is None and (root / first).exists():
            made_on = read_json(root / first, "train").get("environment") or {}
    for seed in ([] if audit and config["audit"]["only"] else config["seeds"]):
        if P.needs_shared_original(config["scenarios"]):
            checksums(entry("", seed, "original"), "", seed, "original")
        for scenario in config["scenarios"]:
            for model in P.scenario_models(config):
                e = entry(scenario, seed, model)
                shared = model == "original" and P.model_checkpoint(run, scenario, seed, model) == \
                    P.model_checkpoint(run, "", seed, model)
                if not shared:
                    ckpt = checksums(e, scenario, seed, model)
                    meta_file = Path(f"{ckpt}.meta.json") if ckpt is not None else None
                    if made_on is None and meta_file is not None and meta_file.exists():
                        made_on = read_json(meta_file, "train").get("environment") or {}
                metrics = present(e, P.model_metrics(run, scenario, seed, model))
                if metrics is not None:
                    record = read_json(metrics, "metrics")
                    e["metrics"] = {k: _number(v) for k, v in sorted(record["metrics"].items())}
    env = made_on or {}
    return {
        "format": FORMAT,
        "run": run,
        "overlays": list(overlays),
        "config_sha256": config_digest(config),
        "seeds": list(config["seeds"]),
        "scenarios": list(config["scenarios"]),
        "models_in_order": P.scenario_models(config),
        "cpu_kernels": config.get("cpu_kernels"),
        "made_on": {
            "kernels": env.get("kernels"),  # None: the run's sidecars do not say (an older run)
            "torch": env.get("torch"),
            "numpy": env.get("numpy"),
            "python": env.get("python"),
            "threads": env.get("torch_threads"),
            "gpu": env.get("gpu"),
        },
        "models": models,
        **({"audit": audits} if audit else {}),
    }


def _profile_arg(overlays: list[str]) -> str:
    return f' PROFILE="{" ".join(overlays)}"' if overlays else ""


def _number(value: Any) -> float | None:
    """A metric as a JSON number; NaN (a metric undefined for the model) as null, which JSON has."""
    if value is None or isinstance(value, (list, dict, str)):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def write_expected(record: dict[str, Any], out: str | Path) -> Path:
    write_json(out, record)
    return Path(out)


def load_expected(path: str | Path) -> dict[str, Any]:
    record = read_json(path, "expected-results")
    if not isinstance(record, dict) or record.get("format") != FORMAT or "models" not in record:
        raise ArtifactError(f"{path}: not an expected-results file of format {FORMAT} "
                            "(make it with `make expected-results`)")
    return record


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare_model(expected: dict[str, Any], actual: dict[str, Any] | None, top: int = 3) -> dict[str, Any]:
    """identical | different (which checksums differ, the largest metric differences) | missing."""
    if actual is None:
        return {"status": "missing", "details": ["not in this run"]}
    if actual.get("missing_files"):
        return {"status": "missing", "details": [f"no {f}" for f in actual["missing_files"]]}
    details: list[str] = []
    for kind in ("checkpoint", "features"):
        if kind in expected and not _same(expected.get(kind), actual.get(kind)):
            details.append(f"{kind} checksum differs")
    diffs: list[tuple[float, str]] = []
    exp_metrics, act_metrics = expected.get("metrics") or {}, actual.get("metrics") or {}
    for name in sorted(set(exp_metrics) | set(act_metrics)):
        if name in MACHINE_DEPENDENT:
            continue
        a, b = exp_metrics.get(name), act_metrics.get(name)
        if _same(a, b):
            continue
        if a is None or b is None:
            diffs.append((math.inf, f"{name} {a} expected, {b} here"))
            continue
        delta = abs(b - a) if not (math.isnan(a) or math.isnan(b)) else math.inf
        diffs.append((delta, f"{name} {a:.6g} expected, {b:.6g} here (|Δ| {delta:.3g})"))
    diffs.sort(key=lambda d: -d[0])
    if diffs:
        details.append(f"{len(diffs)} metrics differ; largest: " + "; ".join(text for _, text in diffs[:top]))
    compared = sum(1 for n in exp_metrics if n not in MACHINE_DEPENDENT)
    if details:
        return {"status": "different", "details": details, "max_delta": diffs[0][0] if diffs else 0.0}
    return {"status": "identical", "details": [f"checksums and {compared} metrics"]}


def compare(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """Every model of the expected record against the run's; counts per status."""
    rows = []
    for key in expected["models"]:
        rows.append({"model": key, **compare_model(expected["models"][key], actual["models"].get(key))})
    extra = sorted(set(actual["models"]) - set(expected["models"]))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("identical", "different", "missing")}
    return {"rows": rows, "counts": counts, "not_expected": extra,
            "config_matches": expected.get("config_sha256") == actual.get("config_sha256")}


def _machine(record: dict[str, Any]) -> str:
    k = (record.get("made_on") or {}).get("kernels")
    gpu = (record.get("made_on") or {}).get("gpu")
    if not k:
        return "a machine its sidecars do not record"
    where = f"{k.get('cpu', '?')} ({k.get('vendor') or '?'}, {k.get('machine', '?')}, " \
            f"{k.get('cpu_kernels', '?')} kernels, ATen {k.get('aten_capability', '?')})"
    return where + (f", GPU {gpu.get('name')}" if gpu else "")


def report(result: dict[str, Any], expected: dict[str, Any], actual: dict[str, Any], source: str) -> str:
    """The check's text: what was compared, one line per model and seed, a summary line."""
    lines = [f"expected: {source}: {len(expected['models'])} models, made on {_machine(expected)}",
             f"this run: results/{actual['run']}, made on {_machine(actual)}"]
    if expected.get("cpu_kernels") != actual.get("cpu_kernels"):
        lines.append(f"warning: the expected results were made with {expected.get('cpu_kernels')} CPU kernels, "
                     f"this run with {actual.get('cpu_kernels')}: their bits differ by design")
    if not result["config_matches"]:
        lines.append("warning: the run's resolved config differs from the one the expected results were made "
                     "with (config_sha256); differences are expected where the config changed")
    width = max((len(r["model"]) for r in result["rows"]), default=10)
    for row in result["rows"]:
        lines.append(f"{row['model']:<{width}}  {row['status']:<9}  {'; '.join(row['details'])}")
    c = result["counts"]
    lines.append(f"summary: {c['identical']} identical, {c['different']} different, {c['missing']} missing"
                 + (f", {len(result['not_expected'])} not in the expected file" if result["not_expected"] else ""))
    return "\n".join(lines) + "\n"


def run_check(configfiles: list[str], expected_file: str | None = None, root: str | Path = ".") -> tuple[int, str]:
    """(exit code, report): 0 when every expected model and seed is identical, else 1."""
    from ..settings.config import load_config, validate_config

    config = validate_config(load_config(configfiles), sources=["config/config.yaml"] + list(configfiles))
    source = expected_file or str(expected_path(config))
    if not Path(source).exists():
        raise ArtifactError(f"{source}: no expected results for run '{P.run_name(config)}'; the shipped files "
                            f"are in {DEFAULT_DIR}/ (make them with `make expected-results`)")
    expected = load_expected(source)
    actual = collect(config, list(configfiles), root, strict=False)
    result = compare(expected, actual)
    text = report(result, expected, actual, source)
    ok = result["counts"]["identical"] == len(result["rows"])
    return (0 if ok else 1), text


def run_write(configfiles: list[str], out: str | None = None, root: str | Path = ".") -> Path:
    from ..settings.config import load_config, validate_config

    config = validate_config(load_config(configfiles), sources=["config/config.yaml"] + list(configfiles))
    record = collect(config, list(configfiles), root)
    return write_expected(record, out or expected_path(config))


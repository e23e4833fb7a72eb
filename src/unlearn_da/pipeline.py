"""What the Snakefile needs from the package, without importing torch.

- the params of every rule, computed from the config (the same function feeds
  the rule's ``params:`` and the provenance check of pulled artifacts), so a
  config change reruns exactly the jobs whose inputs it changes;
- a hash of the package sources each rule runs, put into its ``params:``,
  because Snakemake does not see edits to imported modules;
- the model lists and targets of ``rule all``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from .settings.config import resolve_method
from .core.kernels import ENV_MODE as CPU_KERNELS_ENV  # noqa: F401  (the Snakefile sets it for every job)
from .core.scenarios import is_backdoor

# config keys that say where jobs run, not what they compute: in no job's params, no digest
EXECUTION_KEYS = ("gpu",)


def device_pool_environment(config: dict[str, Any]) -> dict[str, str]:
    """The variables that hand the config's ``gpu`` block to every job (device_pool.py)."""
    from .core.device_pool import environment_for_jobs

    return environment_for_jobs(config.get("gpu") or {})

PACKAGE_DIR = Path(__file__).resolve().parent
ORACLES = ("retrain", "retrain_alt")
FIGURES = ("accuracy", "da", "tradeoff", "spectra", "stability", "embedding", "da_k")
BACKDOOR_FIGURES = ("asr",)  # backdoor scenarios: ASR against clean test accuracy

# the package modules each rule's command executes (cli.py only parses arguments)
_COMMON = ("__init__.py", "__main__.py", "core/kernels.py", "core/artifacts.py", "core/errors.py", "data/datasets.py",
           "core/device_pool.py", "core/startup.py", "warm_start.py")
_TORCH = _COMMON + ("core/runtime.py", "core/cuda_check.py", "jobs/session.py", "data/prepared.py", "core/models.py", "core/training.py", "core/checkpoints.py",
                    "data/backdoor.py")
RULE_SOURCES: dict[str, tuple[str, ...]] = {
    "prepare_data": _COMMON + ("data/prepared.py", "data/cifar.py"),
    "split": _COMMON + ("data/splits.py", "core/scenarios.py", "data/prepared.py", "data/backdoor.py"),
    # a job that makes a model also extracts its features (jobs/features.py)
    "train": _TORCH + ("jobs/train.py", "jobs/features.py", "data/splits.py", "core/scenarios.py"),
    "unlearn": _TORCH + ("jobs/unlearn.py", "jobs/features.py", "data/splits.py", "core/scenarios.py",
                         "methods/__init__.py", "methods/base.py"),
    "metrics": _COMMON + ("jobs/evaluate.py", "jobs/features.py", "data/splits.py", "core/scenarios.py", "data/backdoor.py",
                          "metrics/__init__.py", "metrics/accuracy.py",
                          "metrics/da.py", "metrics/clustering.py", "metrics/mia.py", "metrics/probe.py"),
    "aggregate": _COMMON + ("reporting/tables.py", "reporting/verdicts.py", "reporting/reference.py", "core/scenarios.py"),
    "select": _COMMON + ("tuning/select.py", "tuning/figures.py", "settings/search.py", "reporting/plots.py", "reporting/tables.py", "reporting/verdicts.py"),
    "plan_tuning": _COMMON + ("tuning/select.py", "settings/search.py"),
    "plots": _COMMON + ("reporting/plots.py", "reporting/tables.py", "reporting/verdicts.py", "jobs/evaluate.py", "jobs/features.py", "data/splits.py", "core/scenarios.py", "data/backdoor.py",
                        "metrics/__init__.py",
                        "metrics/accuracy.py", "metrics/da.py", "metrics/clustering.py", "metrics/mia.py",
                        "metrics/probe.py", "reporting/da_curves.py"),
    "choose_da_energy": _COMMON + ("reporting/da_curves.py", "jobs/features.py", "data/splits.py", "core/scenarios.py", "data/backdoor.py",
                                   "metrics/__init__.py", "metrics/da.py"),
    "backdoor_figure": _COMMON + ("reporting/plots.py", "reporting/tables.py", "reporting/verdicts.py"),
    "audit_logits": _TORCH + ("jobs/audit_logits.py", "jobs/features.py", "data/splits.py", "core/scenarios.py"),
    "audit": _COMMON + ("reporting/audit.py", "reporting/audit_figures.py", "reporting/plots.py", "reporting/tables.py",
                        "reporting/verdicts.py", "jobs/audit_logits.py", "jobs/features.py", "metrics/__init__.py",
                        "metrics/klom.py", "metrics/ulira.py", "metrics/mia.py"),
}


@functools.cache
def _file_digest(relpath: str) -> str:
    return hashlib.sha256((PACKAGE_DIR / relpath).read_bytes()).hexdigest()


@functools.cache
def with_packages(relpaths: tuple[str, ...]) -> tuple[str, ...]:
    """``relpaths`` and the ``__init__.py`` of every folder they lie in (importing a module runs its
    package's ``__init__`` first)."""
    inits = {f"{Path(rel).parent.as_posix()}/__init__.py" for rel in relpaths if Path(rel).parent != Path(".")}
    return tuple(sorted(set(relpaths) | inits))


def code_hash(*relpaths: str) -> str:
    """Short hash over the listed package files and their packages' ``__init__.py`` (sorted, deduplicated)."""
    digest = hashlib.sha256()
    for rel in with_packages(tuple(relpaths)):
        digest.update(rel.encode())
        digest.update(_file_digest(rel).encode())
    return digest.hexdigest()[:16]


DA_SOURCES = ("methods/da.py", "metrics/__init__.py", "metrics/da.py")

# published numbers of peer papers that the tables show beside ours (``reference.py``)
REFERENCE_DIR = "config/reference"


def reference_files(ref_dir: str = REFERENCE_DIR) -> list[str]:
    """The reference tables: inputs of ``aggregate``, so editing one reruns the tables."""
    return sorted(p.as_posix() for p in Path(ref_dir).glob("*.csv"))


def method_sources(config: dict, method: str, planned: dict[str, dict] | None = None) -> tuple[str, ...]:
    """Package files an ``unlearn`` job of ``method`` runs: the common ones, its module(s), DA if used
    (a method of ``unlearn.external`` adds its own files: ``method_code``)."""
    base = resolve_method(config, method, planned)[0]
    files = RULE_SOURCES["unlearn"] + method_code_files(config, method, planned)
    if base in (config["unlearn"].get("external") or {}):
        files += ("methods/external.py",)  # loads the user's source
    return files


def _with_external(digest: str, files: list[tuple[str, str]]) -> str:
    """``digest`` extended by an external method's (label, file digest) pairs."""
    if not files:
        return digest
    h = hashlib.sha256(digest.encode())
    for label, file_digest in sorted(files):
        h.update(label.encode())
        h.update(file_digest.encode())
    return h.hexdigest()[:16]


def method_code(config: dict, method: str, planned: dict[str, dict] | None = None) -> str:
    """The code hash in an unlearning job's params: the package files it runs and, for a method of
    ``unlearn.external``, every file of the user's code (editing it reruns exactly its jobs)."""
    from .methods.external import external_method

    base = resolve_method(config, method, planned)[0]
    external = external_method(config, base)
    return _with_external(code_hash(*method_sources(config, method, planned)),
                          external.digests() if external is not None else [])


# A tuned value is valid for the code it was searched with (``tuning_provenance``; tests/test_profiles.py):
# the method's own files, the numerical code every method's training runs through (the training loop, the
# models, precision and kernels, the unlearning context) and the code that scores a candidate (the metric
# functions and the selection rule). The jobs and data modules around them are covered by the expected
# results: a change there that moves a number shows in `make check-reproduction` (docs/tuning.md).
TRAINING_SOURCES = ("core/training.py", "core/models.py", "core/runtime.py", "core/kernels.py", "methods/base.py")
SCORING_SOURCES = ("metrics/accuracy.py", "metrics/mia.py", "tuning/select.py")
DA_ENERGY_SOURCES = ("reporting/da_curves.py", "metrics/da.py")  # the DA metric's energy rule


@functools.cache
def _semantic_digest(relpath: str) -> str:
    """SHA-256 of a module's syntax tree without its docstrings: what the code does, not how it is
    written down (comments, docstrings and layout do not count)."""
    from .methods.external import syntax_digest

    return syntax_digest((PACKAGE_DIR / relpath).read_text())


def semantic_hash(*relpaths: str) -> str:
    """Short hash over the listed modules' syntax trees (docstrings removed), in sorted order."""
    digest = hashlib.sha256()
    for rel in sorted(set(relpaths)):
        digest.update(rel.encode())
        digest.update(_semantic_digest(rel).encode())
    return digest.hexdigest()[:16]


def method_code_files(config: dict, method: str, planned: dict[str, dict] | None = None) -> tuple[str, ...]:
    """A method's own package files: its module(s) and, when it uses DA (``+da``, MUDA), the DA code."""
    from .methods import METHOD_DEPENDENCIES, METHOD_MODULES, USES_DA_CONFIG

    base, _, plus_da = resolve_method(config, method, planned)
    modules = (base,) + METHOD_DEPENDENCIES.get(base, ()) if base in METHOD_MODULES else ()
    files = tuple(f"methods/{METHOD_MODULES.get(m, m)}.py" for m in modules)
    return files + (DA_SOURCES if plus_da or base in USES_DA_CONFIG else ())


def tuned_code(config: dict, method: str) -> dict[str, str]:
    """The code hashes a tuned value of ``method`` is valid for: its own files (a method of
    ``unlearn.external``: the user's files too), the shared training code and the scoring code
    (``semantic_hash``: a docstring or comment changes none of them)."""
    from .methods.external import external_method

    external = external_method(config, resolve_method(config, method)[0])
    own = _with_external(semantic_hash(*method_code_files(config, method)),
                         external.semantic_digests() if external is not None else [])
    return {"method": own, "training": semantic_hash(*TRAINING_SOURCES), "scoring": semantic_hash(*SCORING_SOURCES)}


def tuning_provenance(config: dict) -> dict[str, Any]:
    """What a search depended on besides its metrics: its space, budget, seeds and scenarios, and per
    searched method (each ``+da`` variant too) the code it ran. ``select`` writes it into selection.json."""
    from .settings.config import tuning_space

    tune = config["tuning"]
    space = tuning_space(config)
    methods = sorted(space) + [f"{m}+da" for m in da_tuning_methods(config)]
    return {
        "search": {"space": space, "budget": tune["budget"], "widen": tune["widen"], "seed": tune["seed"],
                   "seeds": list(tune["seeds"]), "scenarios": tuning_scenarios(config),
                   "da_weights": list(tune["da_weights"])},
        "code": {m: tuned_code(config, m) for m in methods},
    }


def rule_code(rule: str) -> str:
    return code_hash(*RULE_SOURCES[rule])


def as_json(obj: Any) -> str:
    """Canonical JSON: the form params take on the command line and in Snakemake's metadata."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------------ params
def _runtime(config: dict) -> dict[str, Any]:
    return {"device": config["device"], "deterministic": config["deterministic"],
            "precision": config["precision"], "cpu_kernels": config["cpu_kernels"]}


def data_params(config: dict) -> dict[str, Any]:
    d = config["data"]
    return {"val_fraction": d["val_fraction"], "test_fraction": d["test_fraction"],
            "split_seed": d["split_seed"], "fashion_mnist_dirs": d["fashion_mnist_dirs"],
            "download": d["download"], "cifar_dirs": d["cifar_dirs"],
            "allow_unverified": d["allow_unverified"], "subset": d.get("subset")}


def backdoor_params(config: dict) -> dict[str, Any]:
    """A backdoor scenario's target class and trigger (only backdoor jobs depend on them)."""
    return dict(config["backdoor"])


def split_params(config: dict, scenario: str) -> dict[str, Any]:
    """What a scenario's split depends on besides the data (empty except for a backdoor)."""
    return backdoor_params(config) if is_backdoor(scenario) else {}


def train_params(config: dict, scenario: str | None = None) -> dict[str, Any]:
    """The training recipe; a backdoor scenario's original also records the poisoning it learnt
    (so a changed trigger shows in its provenance, ``verify``)."""
    params = {"arch": config["arch"], "model": config["model"], "train": config["train"], **_runtime(config)}
    if scenario is not None and is_backdoor(scenario):
        params["backdoor"] = backdoor_params(config)
    return params


def da_block(config: dict, method: str, planned: dict[str, dict] | None = None) -> dict[str, Any]:
    """The DA regulariser's settings for ``method``: its weight is a DA-weight candidate's own, else the
    tuned ``unlearn.da.weights[<base>]`` of a "+da" variant, else ``lambda_da``."""
    from .settings.config import all_variants, method_base

    da = {k: v for k, v in config["unlearn"]["da"].items() if k != "weights"}
    stem, plus_da = method_base(method)
    spec = all_variants(config, planned).get(stem, {})
    base = spec.get("base", stem)
    if "da_weight" in spec:
        da["lambda_da"] = spec["da_weight"]
    elif plus_da and base in (config["unlearn"]["da"].get("weights") or {}):
        da["lambda_da"] = config["unlearn"]["da"]["weights"][base]
    return da


def unlearn_params(config: dict, method: str, planned: dict[str, dict] | None = None) -> dict[str, Any]:
    from .methods import USES_DA_CONFIG

    base, hp, plus_da = resolve_method(config, method, planned)
    un = config["unlearn"]
    params = {
        "method": method,
        "base": base,
        "hp": hp,
        "log_every": un["log_every"],
        "probe_size": un["probe_size"],
        "augment": config["train"].get("augment", "none"),
        "crop_padding": config["train"].get("crop_padding", 0),
        "crop_fill": config["train"].get("crop_fill", "black"),
        **_runtime(config),
    }
    if plus_da or base in USES_DA_CONFIG:
        params["da"] = da_block(config, method, planned)
    external = (config["unlearn"].get("external") or {}).get(base)
    if external is not None:  # a user's method: where the job imports it from (methods/external.py)
        params["source"] = dict(external)
    return params


def features_params(config: dict) -> dict[str, Any]:
    return {"batch_size": config["evaluation"]["batch_size"], **_runtime(config)}


def metrics_params(config: dict) -> dict[str, Any]:
    skip = {"batch_size", "embedding", "noise_floor", "da_k_curve"}
    return {**{k: v for k, v in config["evaluation"].items() if k not in skip},
            "cpu_kernels": config["cpu_kernels"]}


# ------------------------------------------------------------------------------ models and targets
def run_name(config: dict) -> str:
    """The run's folder name (and DVC stage key): ``<dataset>-<arch>[-<run_tag>]``."""
    tag = config.get("run_tag")
    return f"{config['dataset']}-{config['arch']}" + (f"-{tag}" if tag else "")


def run_title(config: dict) -> str:
    tag = config.get("run_tag")
    return f"{config['dataset']} / {config['arch']}" + (f" ({tag})" if tag else "")


def prepared_dir(config: dict) -> str:
    """The run's prepared data and splits: its own, so that no two runs (or DVC stages) share files."""
    return f"data/prepared/{run_name(config)}"


def oracle_models(config: dict) -> list[str]:
    return ["retrain", "retrain_alt"] if config["evaluation"].get("noise_floor", False) else ["retrain"]


def scenario_models(config: dict) -> list[str]:
    """Every model evaluated in a scenario, in table order."""
    return oracle_models(config) + ["original"] + list(config["unlearn"]["methods"])


def needs_shared_original(scenarios: list[str]) -> bool:
    """Whether the run trains the per-seed original the clean scenarios share (a backdoor scenario
    trains its own, on the poisoned train set)."""
    return not all(is_backdoor(s) for s in scenarios)


def model_checkpoint(run: str, scenario: str, seed: int | str, model: str) -> str:
    """One original per seed, shared by the scenarios; a backdoor scenario has its own (poisoned)."""
    if model == "original" and not is_backdoor(scenario):
        return f"results/{run}/seed{seed}/models/original.pt"
    return f"results/{run}/{scenario}/seed{seed}/models/{model}.pt"


def model_features(run: str, scenario: str, seed: int | str, model: str) -> str:
    return model_checkpoint(run, scenario, seed, model).replace("/models/", "/features/").removesuffix(".pt") + ".npz"


def tuning_dir(config: dict) -> str:
    return f"results/{run_name(config)}/tuning"


def tuning_targets(config: dict) -> list[str]:
    """The selection and the two checkpoints' plans, which are part of its record. The plans are
    named so that one removed (by a failed job, or by hand) is made again: Snakemake reruns no
    checkpoint whose downstream outputs are up to date (snakemake PR #4124)."""
    tuning = tuning_dir(config)
    return [*(f"{tuning}/selection.{ext}" for ext in ("md", "csv", "json")),
            f"{tuning}/round2.json", f"{tuning}/da_round.json"]


def tuning_scenarios(config: dict) -> list[str]:
    return list(config["tuning"]["scenarios"] or config["scenarios"])


def tuning_metrics(config: dict, names: list[str] | None = None) -> list[str]:
    """Metric files of the search per tuning seed and scenario: by default the oracle, the original
    (for the no-change flag) and the round-1 candidates; else ``names`` (later rounds)."""
    from .settings.config import tuning_variants

    run = run_name(config)
    names = ["retrain", "original", *tuning_variants(config)] if names is None else list(names)
    return [model_metrics(run, s, seed, m) for s in tuning_scenarios(config) for seed in config["tuning"]["seeds"]
            for m in names]


def da_tuning_methods(config: dict) -> list[str]:
    """Base methods whose "+da" variant the run reports and the search covers: they get the DA-weight round."""
    from .settings.config import method_base, tuning_space

    space = tuning_space(config)
    stems = [method_base(m)[0] for m in config["unlearn"]["methods"] if method_base(m)[1]]
    return sorted({s for s in stems if s in space})


def planned_candidate_pattern(config: dict) -> str:
    """Names of the candidates the tuning checkpoints plan (round 2, DA weights): a wildcard constraint."""
    import re

    from .settings.config import tuning_space

    bases = "|".join(re.escape(m) for m in tuning_space(config))
    return f"(?:{bases})__(?:w[0-9]{{2}}|d[0-9]{{2}}\\+da)" if bases else "(?!)"


def read_plan(path: str) -> dict[str, dict]:
    """The candidates of one tuning plan file (round2.json or da_round.json)."""
    return json.loads(Path(path).read_text())["candidates"]


def load_planned(config: dict) -> dict[str, dict]:
    """The candidates the tuning checkpoints planned so far (round 2 and DA weights), from their files."""
    out: dict[str, dict] = {}
    for name in ("round2", "da_round"):
        path = Path(f"{tuning_dir(config)}/{name}.json")
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        out.update(_plan_candidates(str(path), stat.st_mtime_ns, stat.st_size))
    return {name: dict(values) for name, values in out.items()}


@functools.lru_cache(maxsize=16)
def _plan_candidates(path: str, mtime_ns: int, size: int) -> dict[str, dict]:
    """A plan file's candidates, read once per version of the file (every unlearn job's params ask)."""
    return json.loads(Path(path).read_text())["candidates"]


def da_energy_pairs(config: dict) -> list[dict[str, Any]]:
    """(scenario, seed) pairs of the tuning runs whose original and oracle training features choose
    the DA metric's energy rule (``make da-energy``): tuning seeds only, never a reported seed."""
    run = run_name(config)
    tune = config["tuning"]
    return [{"scenario": s, "seed": seed, "original": model_features(run, s, seed, "original"),
             "oracle": model_features(run, s, seed, "retrain"),
             "split": f"{prepared_dir(config)}/splits/{s}/seed{seed}"}
            for s in (tune["scenarios"] or config["scenarios"]) for seed in tune["seeds"]]


def da_energy_targets(config: dict) -> list[str]:
    return [f"results/{run_name(config)}/tuning/da_energy.{ext}" for ext in ("md", "json")]


def da_energy_params(config: dict) -> dict[str, Any]:
    """What the choice depends on: the DA metric's form, centring and retain subset (not its energy)."""
    da = config["evaluation"]["da"]
    return {"form": da["form"], "center": da["center"], "max_retain": da["max_retain"]}


def da_energy_provenance(config: dict) -> dict[str, Any]:
    """What ``make da-energy`` chose with besides the features: its seeds, scenarios and parameters, and the
    code that trained the models (``TRAINING_SOURCES``) and computes the choice."""
    tune = config["tuning"]
    return {"search": {"seeds": list(tune["seeds"]), "scenarios": tuning_scenarios(config),
                       "params": da_energy_params(config)},
            "code": {"training": semantic_hash(*TRAINING_SOURCES), "choice": semantic_hash(*DA_ENERGY_SOURCES)}}


def model_metrics(run: str, scenario: str, seed: int | str, model: str) -> str:
    return f"results/{run}/{scenario}/seed{seed}/metrics/{model}.json"


# ------------------------------------------------------------------------------ oracle-ensemble audit
def audit_enabled(config: dict) -> bool:
    return bool((config.get("audit") or {}).get("enabled", False))


def audit_train_seeds(config: dict) -> list[int]:
    """The K training seeds of the audit: 0..K-1 (the split seed is apart from them)."""
    return list(range(int(config["audit"]["train_seeds"])))


# The audit's reference oracles train with seed t + this offset (the second ensemble: t + 10,000, its role's
# offset in jobs/train.py): neither ensemble shares the initialisation and data order of original t, so both
# stand in the same relation to the originals and every model unlearned from them.
AUDIT_REFERENCE_SEED_OFFSET = 20_000


def audit_oracle_seed(oracle: str, train_seed: int | str) -> int:
    """The ``--seed`` of an audit oracle of training seed t (its role adds its own offset)."""
    return int(train_seed) + (AUDIT_REFERENCE_SEED_OFFSET if oracle == "retrain" else 0)


def audit_rows(config: dict) -> list[str]:
    """The model kinds the audit scores against the oracles, in table order: the second oracle
    ensemble (the sanity row that must pass), the originals (must fail), then the methods."""
    return ["retrain_alt", "original", *config["audit"]["methods"]]


def audit_checkpoint(run: str, scenario: str, train_seed: int | str, model: str) -> str:
    """An audit model: the original of a training seed is the run's per-seed original (trained on the
    whole train set, no split), every other one lives under ``audit/<scenario>/train<t>/``."""
    if model == "original":
        return model_checkpoint(run, scenario, train_seed, "original")
    return f"results/{run}/audit/{scenario}/train{train_seed}/models/{model}.pt"


def audit_logits_file(run: str, scenario: str, model: str) -> str:
    return f"results/{run}/audit/{scenario}/logits/{model}.npz"


def audit_logits_params(config: dict) -> dict[str, Any]:
    a = config["audit"]
    return {"split_seed": a["split_seed"], "retain_sample": a["retain_sample"], **features_params(config)}


def audit_params(config: dict) -> dict[str, Any]:
    """What the statistics depend on (not the models: those are the inputs)."""
    a = config["audit"]
    return {"klom": a["klom"], "ulira": a["ulira"], "resamples": a["resamples"], "null_draws": a["null_draws"],
            "alpha": a["alpha"], "seed": a["seed"]}


AUDIT_FIGURES = ("klom", "roc")


def audit_targets(config: dict) -> list[str]:
    run = run_name(config)
    targets = []
    for scenario in config["audit"]["scenarios"]:
        base = f"results/{run}/audit/{scenario}"
        targets += [f"{base}/audit.json", f"{base}/audit.md", f"{base}/audit.csv", f"{base}/scores.npz"]
        targets += [f"{base}/figures/{name}.png" for name in AUDIT_FIGURES]
    return targets


def final_targets(config: dict) -> list[str]:
    run = run_name(config)
    if audit_enabled(config) and config["audit"]["only"]:
        return audit_targets(config)
    targets = audit_targets(config) if audit_enabled(config) else []
    for scenario in config["scenarios"]:
        base = f"results/{run}/{scenario}"
        targets += [f"{base}/table.md", f"{base}/table.csv", f"{base}/table.tex", f"{base}/summary.json"]
        targets += [f"{base}/figures/{name}.png" for name in FIGURES]
        if is_backdoor(scenario):
            targets += [f"{base}/figures/{name}.png" for name in BACKDOOR_FIGURES]
    return targets

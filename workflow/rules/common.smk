# Config validation, wildcard constraints and the helpers every rule file uses.
# All logic lives in the package (unlearn_da.pipeline), importable without torch.
import os
import re

from unlearn_da import pipeline as P
from unlearn_da.settings.config import tuning_space, tuning_variants, validate_config
from unlearn_da.core.errors import ConfigError
from unlearn_da.plumbing.snakemake_scheduler import install as install_scheduler_fix

# one pending scheduler wake-up instead of a new chain per round (unlearn_da/plumbing/snakemake_scheduler.py)
install_scheduler_fix()

# the Snakefile's configfile comes first, then --configfile overlays (last wins)
_sources = ["config/config.yaml"] + [
    str(f) for f in workflow.configfiles if str(f) != "config/config.yaml"
]
try:
    validate_config(
        config, schema_path="workflow/schemas/config.schema.yaml", sources=_sources
    )
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# every job's CPU kernels (unlearn_da/core/kernels.py): jobs inherit the mode; the torch and metrics
# rules also carry it in their params, so changing it reruns them
os.environ[P.CPU_KERNELS_ENV] = config["cpu_kernels"]
# the GPU pool every GPU job takes its (device, slot) from (unlearn_da/core/device_pool.py); through
# the environment, not params: where a job runs does not change what it computes
os.environ.update(P.device_pool_environment(config))

RUN = P.run_name(config)
TITLE = P.run_title(config)
SEEDS = config["seeds"]
SCENARIOS = config["scenarios"]
METHODS = config["unlearn"]["methods"]
TUNING = tuning_variants(config)
MODELS = P.scenario_models(config)
FINAL_TARGETS = P.final_targets(config)
THREADS = config["threads"]
GPU = 0 if config["device"] == "cpu" else 1
DATA = "data/prepared/{run}/dataset.npz"
DATA_META = "data/prepared/{run}/dataset.npz.meta.json"
SPLIT = "data/prepared/{run}/splits/{scenario}/seed{seed}"
SPLIT_FILES = {
    name: f"{SPLIT}/{file}"
    for name, file in (
        ("forget", "forget.npy"),
        ("retain", "retain.npy"),
        ("manifest", "manifest.json"),
        ("poison", "poison.npz"),
        ("log", "split.log"),
    )
}
# scenario kinds whose rules differ: a backdoor scenario has its own poisoned data and original
CLEAN_SCENARIO = "random[0-9]+(?:\\.[0-9]+)?|class[0-9]+"
BACKDOOR_SCENARIO = "backdoor[0-9]+(?:\\.[0-9]+)?"
ENV = "../../envs/torch.yaml"
FIGURES = P.FIGURES


wildcard_constraints:
    run=re.escape(RUN),
    seed="[0-9]+",
    scenario=f"{CLEAN_SCENARIO}|{BACKDOOR_SCENARIO}",
    where=f"(?:(?:{CLEAN_SCENARIO}|{BACKDOOR_SCENARIO})/)?seed[0-9]+",
    oracle="|".join(P.ORACLES),
    method="|".join(
        [re.escape(m) for m in METHODS + list(TUNING)]
        + [P.planned_candidate_pattern(config)]
    ),
    model="[A-Za-z0-9_+]+",


def model_outputs(folder, model):
    """The four files a job that makes a model writes under ``folder``: the checkpoint, its features
    (the job extracts them right after saving it) and the sidecar of each."""
    return {
        "model": f"{folder}/models/{model}.pt",
        "meta": f"{folder}/models/{model}.pt.meta.json",
        "features": f"{folder}/features/{model}.npz",
        "features_meta": f"{folder}/features/{model}.npz.meta.json",
    }


def split_files(wildcards):
    """The split's files a job reads (a backdoor scenario's poisoned images too)."""
    wildcards = dict(wildcards)
    skip = (
        {"log"} if wildcards["scenario"].startswith("backdoor") else {"log", "poison"}
    )
    return {
        name: path.format(**wildcards)
        for name, path in SPLIT_FILES.items()
        if name not in skip
    }


def original_files(wildcards):
    """The original a scenario starts from: per seed, or a backdoor scenario's own (poisoned) one."""
    run = wildcards.run
    model = P.model_checkpoint(run, wildcards.scenario, wildcards.seed, "original")
    return {"original": model, "original_meta": f"{model}.meta.json"}


def model_inputs(wildcards):
    """Features and checkpoint sidecar of one model of a scenario (original's are per seed)."""
    run = wildcards.run
    args = (run, wildcards.scenario, wildcards.seed, wildcards.model)
    return {
        "features": P.model_features(*args),
        "model_meta": f"{P.model_checkpoint(*args)}.meta.json",
    }


def plot_inputs(wildcards):
    """What the figures of one scenario read: first seed's metrics, step logs, embedding features."""
    run = wildcards.run
    seed = SEEDS[0]
    base = f"results/{run}/{wildcards.scenario}/seed{seed}"
    embed = ["original", "retrain"] + [
        m for m in config["evaluation"]["embedding"]["models"] if m in METHODS
    ]
    da_k = ["original", "retrain"] + [
        m for m in config["evaluation"]["da_k_curve"]["models"] if m in METHODS
    ]
    return {
        "long": f"results/{run}/{wildcards.scenario}/metrics_long.csv",
        "metrics": [f"{base}/metrics/{m}.json" for m in MODELS],
        "steps": [f"{base}/models/{m}.steps.csv" for m in METHODS],
        "embed": [P.model_features(run, wildcards.scenario, seed, m) for m in embed],
        "da_k": [P.model_features(run, wildcards.scenario, seed, m) for m in da_k],
        "data": DATA.format(run=wildcards.run),
        "manifest": SPLIT_FILES["manifest"].format(seed=seed, **wildcards),
    }


def scenario_metrics(wildcards):
    base = f"results/{wildcards.run}/{wildcards.scenario}"
    return [f"{base}/seed{s}/metrics/{m}.json" for s in SEEDS for m in MODELS]


# ---- tuning (tune.smk): the later rounds' metrics, planned by its checkpoints
def round2_metrics(wildcards):
    plan = checkpoints.plan_round2.get(run=wildcards.run).output[0]
    return P.tuning_metrics(config, list(P.read_plan(plan)))


def da_metrics(wildcards):
    plan = checkpoints.plan_da_weights.get(run=wildcards.run).output[0]
    return P.tuning_metrics(config, [f"{name}+da" for name in P.read_plan(plan)])


# ---- the oracle-ensemble audit (audit.smk)
def audit_split_files(wildcards):
    """The audit's one split: the scenario's split of audit.split_seed."""
    return split_files(
        {
            "run": wildcards.run,
            "scenario": wildcards.scenario,
            "seed": config["audit"]["split_seed"],
        }
    )


def audit_model_files(wildcards):
    """The K checkpoints of one model kind of a scenario (the originals: the run's per-seed ones)."""
    return [
        P.audit_checkpoint(wildcards.run, wildcards.scenario, t, wildcards.model)
        for t in P.audit_train_seeds(config)
    ]


def audit_logits_inputs(wildcards):
    """The oracles' logits (the reference) and those of every row of the audit table."""
    run, scenario = wildcards.run, wildcards.scenario
    return {
        "reference": P.audit_logits_file(run, scenario, "retrain"),
        "rows": [P.audit_logits_file(run, scenario, m) for m in P.audit_rows(config)],
    }

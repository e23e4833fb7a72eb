"""Command line: the commands a user runs, and one per pipeline rule (``python -m unlearn_da <command> ...``).

Only argument parsing lives here; each command calls one function of the
package. Errors a user can fix (PipelineError) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable

from .core.errors import ConfigError, PipelineError


def _params(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--params is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--params must be a JSON object")
    return value


def _json_list(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("must be a JSON list")
    return value


def cmd_prepare_data(a: argparse.Namespace) -> None:
    from .data.prepared import prepare

    prepare(a.dataset, a.params, a.out, raw_dir=a.raw_dir, code=a.code)


def cmd_split(a: argparse.Namespace) -> None:
    from .data.splits import run_split

    run_split(a.data, a.scenario, a.seed, a.params, a.out_dir)


def cmd_train(a: argparse.Namespace) -> None:
    from .jobs.train import run_train

    run_train(a.data, a.role, a.seed, a.threads, a.params, a.out, split_dir=a.split, code=a.code,
              **_features_args(a))


def cmd_unlearn(a: argparse.Namespace) -> None:
    from .jobs.unlearn import run_unlearn

    run_unlearn(a.data, a.split, a.original, a.method, a.seed, a.threads, a.params, a.out, a.steps, code=a.code,
                **_features_args(a))


def _features_args(a: argparse.Namespace) -> dict:
    """``--features-out`` and ``--features-params`` go together (the model's features, same job)."""
    if (a.features_out is None) != (a.features_params is None):
        raise SystemExit("error: --features-out and --features-params go together")
    return {"features_out": a.features_out, "features_params": a.features_params}


def cmd_features(a: argparse.Namespace) -> None:
    from .jobs.features import run_features

    run_features(a.data, a.model, a.threads, a.params, a.out, code=a.code, split_dir=a.split)


def cmd_metrics(a: argparse.Namespace) -> None:
    from .jobs.evaluate import run_metrics

    run_metrics(a.data, a.split, a.features, a.model_meta, a.model, a.scenario, a.seed, a.params, a.out,
                code=a.code)


def cmd_audit_logits(a: argparse.Namespace) -> None:
    from .jobs.audit_logits import run_audit_logits

    run_audit_logits(a.data, a.split, a.models, a.train_seeds, a.threads, a.params, a.out, code=a.code)


def cmd_audit(a: argparse.Namespace) -> None:
    from .reporting.audit import run_audit

    run_audit(a.reference, a.inputs, a.rows, a.scenario, a.title, a.params, a.out_dir, code=a.code)


def cmd_aggregate(a: argparse.Namespace) -> None:
    from .reporting.tables import run_aggregate

    run_aggregate(a.inputs, a.models, a.scenario, a.title, a.out_dir, dataset=a.dataset, arch=a.arch,
                  reference_dir=a.reference_dir)


def cmd_plot(a: argparse.Namespace) -> None:
    from .reporting.plots import run_plots

    run_plots(a.long_csv, a.metrics, a.steps, a.embed_features, a.data, a.split, a.models, a.title,
              a.out_dir, a.max_points, a.seed, da_k_features=a.da_k_features, da_params=a.da_params,
              da_k_out=a.da_k_out)


def cmd_backdoor_figure(a: argparse.Namespace) -> None:
    from .reporting.plots import run_backdoor_figure

    run_backdoor_figure(a.long_csv, a.models, a.title, a.out)


def cmd_choose_da_energy(a: argparse.Namespace) -> None:
    from .reporting.da_curves import run_choose_energy

    result = run_choose_energy(a.pairs, a.params, a.seed, a.out_prefix, a.provenance)
    print(f"evaluation.da.energy: {result['chosen_energy']} (fixed-size alternative: k = {result['chosen_k']})")


def cmd_select(a: argparse.Namespace) -> None:
    from .tuning.select import run_selection

    run_selection(a.inputs, a.candidates, a.out_prefix, a.plans, a.figures_dir, a.provenance)


def cmd_plan_round2(a: argparse.Namespace) -> None:
    from .tuning.select import run_plan_round2

    plan = run_plan_round2(a.inputs, a.space, a.candidates, a.budget, a.widen, a.seed, a.out)
    for method, info in sorted(plan["info"].items()):
        print(f"{method}: {info['kind']} {'; '.join(info['edges'])}".rstrip())


def cmd_plan_da(a: argparse.Namespace) -> None:
    from .tuning.select import run_plan_da

    plan = run_plan_da(a.inputs, a.candidates, a.round2, a.methods, a.weights, a.out)
    print(f"{len(plan['candidates'])} DA-weight candidates")


def cmd_verify(a: argparse.Namespace) -> None:
    from .settings.config import load_config, validate_config
    from .core.errors import ArtifactError
    from .tools.provenance import verify

    sources = ["config/config.yaml"] + list(a.configfile)
    config = validate_config(load_config(a.configfile), sources=sources)
    problems, checked = verify(config)
    if problems:
        raise ArtifactError(
            f"{len(problems)} of {checked} artifacts do not match the current config/code:\n  - "
            + "\n  - ".join(problems)
            + "\nDelete them (Snakemake then remakes them), or check out the config and code that made them."
        )
    print(f"verified {checked} artifacts against the config and code: all match")


#: keys that name a run's folders: DVC's params.yaml (a stage's parameters, set by experiments) may not set them
RUN_NAME_KEYS = ("dataset", "arch", "run_tag")


def _run_config(configfiles: list[str]) -> dict:
    from .settings.config import load_config, read_yaml, validate_config

    for path in configfiles:
        if Path(path).name == "params.yaml":
            named = [k for k in RUN_NAME_KEYS if k in (read_yaml(path) or {})]
            if named:
                raise ConfigError(f"{path}: sets {', '.join(named)}, which name(s) the run's folders: DVC's "
                                  "parameters file changes values within a run; set them in a profile")
    return validate_config(load_config(configfiles), sources=["config/config.yaml"] + list(configfiles))


def cmd_check_config(a: argparse.Namespace) -> None:
    """Read every config file with the project's safe loader and validate the merged config, so that
    a bad or hostile overlay is refused before Snakemake (which evaluates YTE templates) reads it."""
    _run_config(a.configfile)
    print(f"config ok: {', '.join(['config/config.yaml', *a.configfile])}")


# no GPU visible: the rules' gpu resource bounds nothing (the jobs run on the CPU, bounded by cores)
UNBOUNDED_GPU_JOBS = 1_000_000


def cmd_concurrency_worker(a: argparse.Namespace) -> None:
    from .tools.concurrency import worker

    print(json.dumps(worker(json.loads(a.spec))))


def cmd_gpu_slots(a: argparse.Namespace) -> None:
    """devices x jobs_per_device of the config's ``gpu`` block: make passes it as Snakemake's
    ``--resources gpu=N``, so no more GPU jobs start than the device pool has slots."""
    import dataclasses

    from .core import device_pool

    config = _run_config(a.configfile)
    env = {**os.environ, **device_pool.environment_for_jobs(config.get("gpu") or {})}
    settings = device_pool.settings_from_environment(env)
    slots = 0 if config["device"] == "cpu" and not settings.fake else device_pool.slot_count(settings)
    if config["device"] == "cuda" and slots == 0:
        from .core.cuda_check import cuda_diagnosis

        raise ConfigError(f"device: cuda (the profile needs a GPU), but this machine has none: {cuda_diagnosis()}. "
                          "Run on a GPU node, or put device: cpu in an overlay after the profile to run on the CPU on purpose")
    note = _auto_device_note(config)
    if note:
        print(note, file=sys.stderr)
    if a.explain:
        from .tools.cuda_build import build_fit

        print(f"{slots} GPU slot(s): {dataclasses.asdict(settings)}; {build_fit()}", file=sys.stderr)
    print(slots if slots > 0 else UNBOUNDED_GPU_JOBS)


def _auto_device_note(config: dict) -> str | None:
    """A CPU-made profile with ``device: auto`` on a machine whose torch sees a GPU (torch is imported
    only where an NVIDIA driver is loaded: every make target runs this)."""
    from .core import device_pool

    if config.get("device") != "auto" or device_pool.driver_version() is None:
        return None
    import torch

    from .tools.reproduction import expected_path
    from .settings.config import REPO_ROOT
    from .tools.cuda_build import auto_device_note

    path = REPO_ROOT / expected_path(config)
    made_on_cpu = path.is_file() and (json.loads(path.read_text()).get("made_on") or {}).get("gpu") is None
    return auto_device_note(config, torch.cuda.is_available(), made_on_cpu)


def cmd_run_name(a: argparse.Namespace) -> None:
    from .pipeline import run_name

    print(run_name(_run_config(a.configfile)))


def cmd_snakemake_records(a: argparse.Namespace) -> None:
    from .pipeline import run_name
    from .plumbing import snakemake_records

    run = run_name(_run_config(a.configfile))
    count = getattr(snakemake_records, a.action)(run)
    if count:
        verb = "restored" if a.action == "restore" else "saved"
        print(f"snakemake-records: {count} record(s) of results/{run} {verb}", file=sys.stderr)


def cmd_dvc_experiments(a: argparse.Namespace) -> None:
    from .tools.dvc_experiments import main as measure

    measure(a.repo, a.out, a.key, a.values, a.queue_jobs, a.cores)


def cmd_measure(a: argparse.Namespace) -> None:
    from .tools.measurements import measure

    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        raise ConfigError("measure: name the command to time after --, e.g. python -m unlearn_da measure -- make test")
    code = measure(command, key=a.key, path=a.file, note=a.note)
    if code:
        sys.exit(code)


def cmd_dvc_stage(a: argparse.Namespace) -> None:
    from .pipeline import prepared_dir, run_name
    from .plumbing.sharing import ensure_stage, stage_for

    config = _run_config(a.configfile)
    if a.no_add:
        stage, note = stage_for(run_name(config), a.configfile)
    else:
        stage, note = ensure_stage(run_name(config), prepared_dir(config), a.configfile)
    if note:
        print(note, file=sys.stderr)
    print(stage or "")


def cmd_check_reproduction(a: argparse.Namespace) -> None:
    from .tools.reproduction import run_check

    code, text = run_check(a.configfile, a.expected)
    print(text, end="")
    if code:
        sys.exit(code)


def cmd_expected_results(a: argparse.Namespace) -> None:
    from .tools.reproduction import run_write

    print(f"wrote {run_write(a.configfile, a.out)}")


def cmd_readme_tables(a: argparse.Namespace) -> None:
    from .tools.readme_tables import run_readme_tables

    code, text = run_readme_tables(".", check=a.check)
    print(text)
    if code:
        sys.exit(code)


def cmd_apply_selection(a: argparse.Namespace) -> None:
    from .tuning.apply_selection import apply_selection

    changes = apply_selection(a.selection, a.config)
    print("\n".join(changes) if changes else f"{a.config}: already holds every chosen value")


def cmd_bench(a: argparse.Namespace) -> None:
    from .tools.bench import run_bench

    print(run_bench(a.out, threads=a.threads, skip_noop=a.skip_noop))


def cmd_smoke_paper(a: argparse.Namespace) -> None:
    from .tools.smoke import run_smoke

    run_smoke(a.workdir, datasets=tuple(a.datasets), cores=a.cores)


def cmd_gpu_check(a: argparse.Namespace) -> None:
    from .tools.gpucheck import run_gpu_check

    code = run_gpu_check(a.device, a.workdir, threads=a.threads, amp=a.amp, part=a.part,
                         skip_throughput=a.skip_throughput, measure_only=a.measure_only,
                         skip_compile=a.skip_compile)
    if code:
        sys.exit(code)


#: the commands a user runs by hand (``--help`` lists these; the rules and the Makefile run the others)
USER_COMMANDS = ("check-config", "verify", "apply-selection", "check-reproduction", "expected-results",
                 "readme-tables", "bench", "smoke-paper", "gpu-check", "dvc-experiments", "measure")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m unlearn_da", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    plumbing: list[str] = []

    def add(name: str, func: Callable[[argparse.Namespace], None], help_: str) -> argparse.ArgumentParser:
        """A command: listed in ``--help`` when a user runs it, else (run by the rules and the Makefile)
        named only in the epilog; ``<command> --help`` describes either."""
        user = name in USER_COMMANDS
        p = sub.add_parser(name, help=help_, description=help_) if user else sub.add_parser(name, description=help_)
        if not user:
            plumbing.append(name)
        p.set_defaults(func=func)
        return p

    p = add("prepare-data", cmd_prepare_data, "materialise a data set with its fixed train/val/test split")
    p.add_argument("--dataset", required=True)
    p.add_argument("--params", type=_params, required=True)
    p.add_argument("--raw-dir", default="data/raw")
    p.add_argument("--out", required=True)
    p.add_argument("--code", default=None, help="code hash of the rule (recorded in the sidecar)")

    p = add("split", cmd_split, "draw the forget/retain indices of a scenario and seed")
    p.add_argument("--data", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--params", type=_params, default={}, help="backdoor scenarios: target class and trigger")
    p.add_argument("--out-dir", required=True)

    p = add("train", cmd_train, "train the original model or a retrained oracle")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--role", required=True, choices=["original", "retrain", "retrain_alt"])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--params", type=_params, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--code", default=None, help="code hash of the rule (recorded in the sidecar)")
    p.add_argument("--features-out", default=None,
                   help="also extract the saved model's features and logits into this .npz (same job)")
    p.add_argument("--features-params", type=_params, default=None, help="the feature pass's parameters")

    p = add("unlearn", cmd_unlearn, "run one unlearning method from the original checkpoint")
    for arg in ("--data", "--split", "--original", "--method", "--out", "--steps"):
        p.add_argument(arg, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--params", type=_params, required=True)
    p.add_argument("--code", default=None, help="code hash of the rule (recorded in the sidecar)")
    p.add_argument("--features-out", default=None,
                   help="also extract the saved model's features and logits into this .npz (same job)")
    p.add_argument("--features-params", type=_params, default=None, help="the feature pass's parameters")

    p = add("features", cmd_features, "extract penultimate features and logits of a saved model "
            "(the pipeline does this in the job that made the model)")
    for arg in ("--data", "--model", "--out"):
        p.add_argument(arg, required=True)
    p.add_argument("--split", default=None, help="a backdoor scenario's split: poisoned train set, triggered test set")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--params", type=_params, required=True)
    p.add_argument("--code", default=None, help="code hash of the rule (recorded in the sidecar)")

    p = add("metrics", cmd_metrics, "compute every per-model metric from cached features")
    for arg in ("--data", "--split", "--features", "--model-meta", "--model", "--scenario", "--out"):
        p.add_argument(arg, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--params", type=_params, required=True)
    p.add_argument("--code", default=None, help="code hash of the rule (recorded in the output)")

    p = add("audit-logits", cmd_audit_logits, "logits of one model kind's K audit models on the audit's examples")
    for arg in ("--data", "--split", "--out"):
        p.add_argument(arg, required=True)
    p.add_argument("--models", nargs="+", required=True, help="the K checkpoints, in training-seed order")
    p.add_argument("--train-seeds", type=int, nargs="+", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--params", type=_params, required=True)
    p.add_argument("--code", default=None, help="code hash of the rule (recorded in the sidecar)")

    p = add("audit", cmd_audit, "the oracle-ensemble audit of one scenario: KLoM, U-LiRA, table, figures")
    p.add_argument("--reference", required=True, help="the oracles' audit logits")
    p.add_argument("--inputs", nargs="+", required=True, help="one audit logits file per row")
    p.add_argument("--rows", nargs="+", required=True, help="the rows' model names, in the order of --inputs")
    p.add_argument("--scenario", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--params", type=_params, required=True)
    p.add_argument("--code", default=None)
    p.add_argument("--out-dir", required=True)

    p = add("backdoor-figure", cmd_backdoor_figure, "backdoor scenario: ASR against clean test accuracy")
    p.add_argument("--long-csv", required=True)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--title", required=True)
    p.add_argument("--out", required=True)

    p = add("aggregate", cmd_aggregate, "tables (CSV, Markdown, LaTeX) over seeds for one scenario")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--dataset", default="", help="with --arch and --scenario, picks the matching reference rows")
    p.add_argument("--arch", default="")
    p.add_argument("--reference-dir", default=None, help="published tables of peer papers (*.csv) to show "
                   "beside ours where (dataset, arch, scenario) match, e.g. config/reference")
    p.add_argument("--out-dir", required=True)

    p = add("plot", cmd_plot, "figures of one scenario")
    for arg in ("--long-csv", "--data", "--split", "--out-dir"):
        p.add_argument(arg, required=True)
    for arg in ("--metrics", "--models", "--embed-features"):
        p.add_argument(arg, nargs="+", required=True)
    p.add_argument("--steps", nargs="*", default=[])
    p.add_argument("--title", default="")
    p.add_argument("--max-points", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--da-k-features", nargs="*", default=[], help="features of original, oracle and models "
                   "for the DA(k) figure (first seed)")
    p.add_argument("--da-params", type=_params, default=None, help="evaluation.da (JSON)")
    p.add_argument("--da-k-out", default=None, help="prefix of the DA(k) curves (.csv, .json)")
    p = add("choose-da-energy", cmd_choose_da_energy, "the DA metric's energy rule that best separates original "
            "and oracle on the tuning seeds' training features")
    p.add_argument("--pairs", type=_json_list, required=True,
                   help="JSON list of {scenario, seed, original, oracle, split} (feature files, split folder)")
    p.add_argument("--params", type=_params, required=True, help="evaluation.da (JSON)")
    p.add_argument("--seed", type=int, default=0, help="evaluation.seed: the retain subset the metric draws")
    p.add_argument("--provenance", type=_params, default=None,
                   help="the seeds, scenarios and code hashes of the choice (JSON, written into its JSON)")
    p.add_argument("--out-prefix", required=True)
    p = add("select", cmd_select, "pick each method's hyper-parameters from the tuning runs (validation split)")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--candidates", type=_params, required=True,
                   help="round-1 candidate name -> {base, values} (JSON)")
    p.add_argument("--plans", nargs="*", default=[], help="round2.json and da_round.json of the tuning checkpoints")
    p.add_argument("--figures-dir", default=None, help="one figure per method: score against each swept value")
    p.add_argument("--provenance", type=_params, default=None,
                   help="the search's space, budget, seeds and each method's code hashes (JSON, written into selection.json)")
    p.add_argument("--out-prefix", required=True)
    p = add("plan-round2", cmd_plan_round2, "plan round 2 of the search from round 1's scores (widen or refine)")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--space", type=_params, required=True, help="tuning.space (JSON)")
    p.add_argument("--candidates", type=_params, required=True, help="round-1 candidates (JSON)")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--widen", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p = add("plan-da", cmd_plan_da, "plan the DA-weight candidates of the +da variants at their base's choice")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--candidates", type=_params, required=True, help="round-1 candidates (JSON)")
    p.add_argument("--round2", required=True, help="round2.json")
    p.add_argument("--methods", nargs="*", default=[], help="base methods whose +da variant is reported")
    p.add_argument("--weights", type=float, nargs="+", required=True, help="tuning.da_weights")
    p.add_argument("--out", required=True)
    p = add("verify", cmd_verify, "check existing artifacts (e.g. after dvc pull) against the config and code")
    p.add_argument("--configfile", nargs="*", default=[], help="overlays, as given to snakemake --configfile")
    p = add("check-config", cmd_check_config, "validate config files as data (make targets run it before Snakemake)")
    p.add_argument("--configfile", nargs="*", default=[], help="overlays, as given to snakemake --configfile")
    p = add("concurrency-worker", cmd_concurrency_worker, "one process of gpu-check's jobs-per-device "
            "measurement (internal)")
    p.add_argument("--spec", required=True, help="the worker's spec as JSON (concurrency.profile_spec)")
    p = add("gpu-slots", cmd_gpu_slots, "how many GPU jobs may run at once: devices x jobs_per_device "
            "(make passes it to Snakemake as --resources gpu=N)")
    p.add_argument("--configfile", nargs="*", default=[], help="overlays, as given to snakemake --configfile")
    p.add_argument("--explain", action="store_true", help="say on stderr where the count comes from")
    p = add("run-name", cmd_run_name, "the run's folder name, results/<run name> (validates the config)")
    p.add_argument("--configfile", nargs="*", default=[], help="overlays, as given to snakemake --configfile")
    p = add("snakemake-records", cmd_snakemake_records, "carry Snakemake's records of the run's jobs in "
            "results/<run>/.snakemake-records (save) and put back those .snakemake/ lacks (restore)")
    p.add_argument("action", choices=["save", "restore"])
    p.add_argument("--configfile", nargs="*", default=[], help="overlays, as given to snakemake --configfile")
    p = add("dvc-experiments", cmd_dvc_experiments, "measure what DVC's experiment modes (--temp, a queued sweep, "
            "the workspace) rerun and take, in a clone of a finished run; sets its entry of the measurements file")
    p.add_argument("--repo", required=True, help="a Git + DVC clone whose run stage and dvc.lock are committed")
    p.add_argument("--out", default="measurements/measurements.json", help="the measurements file to update")
    p.add_argument("--key", default="unlearn.ft.lr", help="the value each experiment sets")
    p.add_argument("--values", nargs=5, default=["0.2", "0.25", "0.3", "0.35", "0.4"],
                   help="five values: --temp, three for the queued sweep, the workspace")
    p.add_argument("--queue-jobs", type=int, default=2, help="dvc queue start -j")
    p.add_argument("--cores", type=int, default=None, help="CORES per queued experiment (default: cores / jobs)")
    p = add("measure", cmd_measure, "run a command, time it and record the time, the machine, the date, the "
            "commit and its job and test counts in the measurements file the docs render")
    p.add_argument("--file", default="measurements/measurements.json", help="the measurements file to update")
    p.add_argument("--key", default=None, help="the entry's name (default: the command line)")
    p.add_argument("--note", default=None, help="a remark shown with the time")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command, e.g. -- make test")
    p = add("dvc-stage", cmd_dvc_stage, "the run's DVC stage (added to dvc.yaml if the run has none); an empty "
            "line when the run's stage runs other overlays")
    p.add_argument("--configfile", nargs="*", default=[], help="overlays, as given to snakemake --configfile")
    p.add_argument("--no-add", action="store_true", help="only look the stage up")
    p = add("apply-selection", cmd_apply_selection, "write a search's chosen values (selection.json) into a "
            "config file, changing only those values")
    p.add_argument("selection", help="results/<run>/tuning/selection.json")
    p.add_argument("config", help="the profile to update, e.g. config/fashion-mnist.yaml")
    p = add("check-reproduction", cmd_check_reproduction, "compare a finished run with its shipped expected "
            "results: identical or different, per model and seed (exit 1 when any differs)")
    p.add_argument("--configfile", nargs="*", default=[], help="overlays, as given to snakemake --configfile")
    p.add_argument("--expected", default=None, help="expected-results file (default expected/<run>.json)")
    p = add("expected-results", cmd_expected_results, "write a finished run's checksums and per-seed metrics "
            "as its expected results (expected/<run>.json)")
    p.add_argument("--configfile", nargs="*", default=[], help="overlays, as given to snakemake --configfile")
    p.add_argument("--out", default=None, help="default expected/<run>.json")
    p = add("readme-tables", cmd_readme_tables, "rewrite the generated result tables of README.md and docs/ (and their figure) from expected/*.json")
    p.add_argument("--check", action="store_true", help="only say whether README.md is up to date (exit 1 if not)")
    p = add("bench", cmd_bench, "measure throughput and overheads on this machine (Markdown summary)")
    p.add_argument("--out", default="results/bench/summary.md")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-noop", action="store_true", help="do not time Snakemake no-op runs")

    p = add("smoke-paper", cmd_smoke_paper, "the CIFAR paper profiles through every rule on synthetic data")
    p.add_argument("--workdir", default="results/smoke-paper")
    p.add_argument("--datasets", nargs="+", default=["cifar10", "cifar100"], choices=["cifar10", "cifar100"])
    p.add_argument("--cores", type=int, default=2)

    p = add("gpu-check", cmd_gpu_check, "the paper path's stages on a device with the profile's precision, "
            "then the rates, real jobs' fixed costs and the projected paper-table hours (no Snakemake needed)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"])
    p.add_argument("--workdir", default="results/gpu-check")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--amp", default="auto", choices=["on", "off", "auto"],
                   help="bf16 autocast; auto (default): the profile's setting, on for CUDA, off on the CPU (bf16 is emulated on most CPUs and 5-15x slower)")
    p.add_argument("--part", default="quick", choices=["quick", "full"],
                   help="quick (default; minutes on one GPU): the paper path's stages on one scenario, the rates, "
                        "one real job of each kind, the projection; full: every scenario, 8 processes, compile, "
                        "the bare loop")
    p.add_argument("--skip-throughput", action="store_true", help="no measurement at all: only the stages")
    p.add_argument("--measure-only", action="store_true",
                   help="only the measurements (data, one split, then the rates, jobs per device, real jobs, "
                        "projection), not every method's stages")
    p.add_argument("--skip-compile", action="store_true",
                   help="no compile on/off measurement (Inductor compiles C++ or Triton code: minutes)")
    import textwrap

    parser.epilog = textwrap.fill("run by the pipeline's rules and the Makefile (each has --help): "
                                  + ", ".join(plumbing), 78, break_on_hyphens=False)
    return parser


def _trace_modules(args: argparse.Namespace) -> None:
    """With UNLEARN_DA_TRACE=<file>, append which package modules this command ran.

    The test suite uses it to prove that each rule's code hash (pipeline.RULE_SOURCES)
    covers every module the rule's command imports.
    """
    target = os.environ.get("UNLEARN_DA_TRACE")
    if not target:
        return
    modules = sorted(m for m in sys.modules if m == "unlearn_da" or m.startswith("unlearn_da."))
    line = json.dumps({"command": args.command, "method": getattr(args, "method", None), "modules": modules})
    with open(target, "a") as fh:
        fh.write(line + "\n")


def _apply_cpu_kernels(args: argparse.Namespace) -> None:
    """A job's ``cpu_kernels`` param (portable | native) is set before its command imports torch."""
    from .core import kernels

    params = getattr(args, "params", None)
    mode = params.get("cpu_kernels") if isinstance(params, dict) else None
    if mode is not None:
        try:
            kernels.apply(mode)
        except ValueError as exc:
            from .core.errors import ConfigError

            raise ConfigError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _apply_cpu_kernels(args)
        args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _trace_modules(args)
    return 0

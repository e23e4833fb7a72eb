"""The tiny config through workflow/profiles/slurm on a real single-node SLURM cluster.

Not part of ``make test``: ``make test-slurm`` installs Debian's slurm-wlm, slurmdbd, munge
and mariadb-server, and runs this file. tests/support/slurm_cluster.py starts the cluster (all
state in a temporary directory, every daemon on 127.0.0.1) and stops it afterwards.

The shipped profile asks for what a GPU cluster has (8 CPUs, 32 GB, `cpu` and `gpu`
partitions, a placeholder account). The run keeps that profile and overrides on the
command line only what this node cannot give: every CPU count and thread count is capped
at the node's CPUs, every memory request at its share of the node's memory, every
partition is the node's one partition, the account is the test cluster's. A local run of
the same config with the same thread counts must write the same metrics files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO, copy_project, dry_run_jobs, env_with_venv, snakemake
from support.slurm_cluster import SlurmCluster, missing_tools

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TINY = ("--configfile", "tests/config/tiny.yaml", "--config", "device=cpu")
PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to launch jobs")
    if missing_tools():
        pytest.skip(f"missing {', '.join(missing_tools())}: run `make test-slurm`")
    # a short path: the MUNGE and MariaDB sockets live in it (108-byte limit)
    root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    try:
        with SlurmCluster.started(root) as c:
            yield c
    finally:
        keep = tmp_path_factory.mktemp("slurm-logs")
        if (root / "log").is_dir():
            shutil.copytree(root / "log", keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def fit_profile_to_node(cluster: SlurmCluster) -> tuple[list[str], dict[str, int]]:
    """Command-line options that override the shipped profile where this node falls short.
    Returns (options, rule -> threads)."""
    profile = yaml.safe_load(PROFILE.read_text())
    mem_per_cpu = cluster.memory_mb // cluster.cpus

    def fit(res: dict) -> dict:
        res = dict(res)
        if "cpus_per_task" in res:
            res["cpus_per_task"] = min(int(res["cpus_per_task"]), cluster.cpus)
        if "mem_mb" in res:
            res["mem_mb"] = min(int(res["mem_mb"]), mem_per_cpu * res.get("cpus_per_task", 1))
        if "slurm_partition" in res:
            res["slurm_partition"] = cluster.partition
        if "slurm_account" in res:
            res["slurm_account"] = cluster.account
        return res

    threads = {rule: min(int(n), cluster.cpus) for rule, n in profile["set-threads"].items()}
    default = fit(profile["default-resources"])
    options = ["--set-threads", *(f"{rule}={n}" for rule, n in threads.items())]
    options += ["--default-resources", *(f"{k}={v}" for k, v in default.items())]
    options += ["--set-resources"]
    for rule, res in profile["set-resources"].items():
        options += [f"{rule}:{k}={v}" for k, v in fit(res).items()]
    return options, threads


def local_rules(root: Path) -> set[str]:
    """Rules that Snakemake runs on the submitting node: `localrule: True` ones and `all`."""
    local = {"all"}
    for smk in (root / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule )", smk.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"^\s+localrule:\s*True", block, flags=re.M):
                local.add(m.group(1))
    return local


def sacct_jobs(cluster: SlurmCluster) -> list[dict[str, str]]:
    fields = ["JobIDRaw", "JobName", "State", "Account", "Partition", "AllocTRES", "ReqTRES", "Comment"]
    out = cluster.run("sacct", "-X", "-a", "--parsable2", "--noheader", "--starttime", "now-1days",
                      f"--format={','.join(fields)}").stdout
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]


def rule_of(comment: str, rules: set[str]) -> str:
    """The rule of a job from the plugin's sbatch --comment (rule_<rule>[_wildcards_...])."""
    for rule in sorted(rules, key=len, reverse=True):
        if comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"):
            return rule
    raise AssertionError(f"no rule in job comment {comment!r}")


def metrics_files(root: Path) -> dict[str, dict]:
    """Every metrics JSON, less `metrics.seconds`: the model's training or unlearning wall
    time (from its checkpoint sidecar), which no two runs share; and less the torch fields of its
    environment record: a metrics job does not use torch, and the record names it when the job's
    process has it loaded, which a local job under warm start has (the server preloads it) and a
    SLURM job (warm start off) has not."""
    files = {}
    for path in sorted((root / "results").glob("*/*/seed*/metrics/*.json")):
        record = json.loads(path.read_text())
        assert record["metrics"].pop("seconds") > 0
        env = record.get("environment") or {}
        for key in ("torch", "torch_threads", "cuda", "gpu"):
            env.pop(key, None)
        (env.get("kernels") or {}).pop("aten_capability", None)
        files[str(path.relative_to(root))] = record
    return files


def test_tiny_config_on_a_slurm_cluster(cluster: SlurmCluster, tmp_path: Path):
    listening = cluster.listening()
    assert set(listening) == {"mariadbd", "slurmdbd", "slurmctld", "slurmd"}, listening
    for daemon, addrs in listening.items():
        assert all(a.startswith("127.") for a in addrs), (daemon, addrs)
    overrides, threads = fit_profile_to_node(cluster)
    slurm_root = copy_project(tmp_path / "slurm")
    local_root = copy_project(tmp_path / "local")

    profile = ("--workflow-profile", "workflow/profiles/slurm")
    planned = dry_run_jobs(slurm_root, *profile, *TINY, *overrides)
    local = local_rules(slurm_root)
    remote = {rule: n for rule, n in planned.items() if rule not in local}
    # every rule that trains, unlearns or measures goes through sbatch (the tiny DAG: 26 such jobs)
    assert {"train_original", "train_retrain", "unlearn", "metrics"} <= set(remote), planned

    # -- the SLURM run: every non-local job through sbatch, tracked by the plugin
    cmd = [str(BIN / "snakemake"), "--cores", "2", *profile, *TINY, *overrides,
           "--slurm-init-seconds-before-status-checks", "5", "--slurm-keep-successful-logs", "--verbose"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=slurm_root, env=cluster.env(env_with_venv()), capture_output=True, text=True,
                          timeout=3600)
    wall = time.monotonic() - start
    log = proc.stdout + proc.stderr
    (tmp_path / "slurm-run.log").write_text(log)
    assert proc.returncode == 0, f"SLURM run failed ({proc.returncode}):\n{log[-6000:]}\n{cluster.log_tails()}"

    # what the plugin submitted: one sbatch per non-local job, none of them asking for a GPU
    calls = re.findall(r"^sbatch call: (sbatch .*)$", log, flags=re.M)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert "Falling back to" not in log and "unavailable, using 'squeue'" not in log
    assert len(calls) == len(submitted) == sum(remote.values()), (len(calls), len(submitted), remote)
    for call in calls:
        assert "--gpus" not in call and "--gres" not in call, call
        assert f"-A {cluster.account}" in call and f"-p {cluster.partition}" in call, call

    # what SLURM ran (slurmdbd's record): the same jobs, per rule, all completed
    jobs = sacct_jobs(cluster)
    assert sorted(j["JobIDRaw"] for j in jobs) == sorted(submitted)
    assert all(j["State"] == "COMPLETED" for j in jobs), jobs
    assert all(j["Account"] == cluster.account and j["Partition"] == cluster.partition for j in jobs)
    assert not any("gpu" in j["AllocTRES"] + j["ReqTRES"] for j in jobs), jobs
    per_rule: dict[str, int] = {}
    for j in jobs:
        rule = rule_of(j["Comment"], set(planned))
        per_rule[rule] = per_rule.get(rule, 0) + 1
    assert per_rule == remote
    for j in jobs:  # the rules with more threads got as many CPUs
        rule = rule_of(j["Comment"], set(planned))
        if rule in threads:
            assert f"cpu={threads[rule]}," in j["AllocTRES"], (rule, j["AllocTRES"])

    # -- the same config and thread counts run locally: the same numbers
    snakemake(local_root, *TINY, "--set-threads", *(f"{r}={n}" for r, n in threads.items()))
    slurm_metrics, local_metrics = metrics_files(slurm_root), metrics_files(local_root)
    assert len(slurm_metrics) == planned["metrics"]
    assert slurm_metrics == local_metrics

    summary = {"wall_s": round(wall, 1), "jobs_submitted": len(submitted), "per_rule": per_rule,
               "metrics_files_equal": len(slurm_metrics), "listening": listening}
    print(json.dumps(summary))
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=1))

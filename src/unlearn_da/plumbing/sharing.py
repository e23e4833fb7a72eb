"""The DVC stage that records a run's outputs (``make reproduce`` runs it with ``dvc repro``).

A run (``results/<run>``, ``data/prepared/<run>``; ``pipeline.run_name``) gets one stage in
``dvc.yaml``, named after the run, whose command is ``make pipeline PROFILE="<overlays>"``.
The shipped ``dvc.yaml`` declares none: ``make reproduce`` adds the stage of the profile it
runs the first time (``dvc stage add``), so ``dvc status`` lists only runs that were made
and is clean after the one command. The stage is used only when its overlays are exactly
the ones given: a user overlay that writes into an existing stage's folder (same run name,
other values) must not run as that stage. Then Snakemake runs directly and a note says how
to give the overlay its own folder.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..core.errors import ConfigError, short

COMMAND = "make --no-print-directory pipeline PROFILE="
DEPS = ("Snakefile", "workflow", "src/unlearn_da", "config")
PARAMS = "params.yaml:"  # DVC's parameters file, read last by every make target (`dvc exp run -S ++key=value`)


def _normalise(configfiles: Sequence[str]) -> list[str]:
    files = [os.path.normpath(f) for f in configfiles if f.strip()]
    return [f for f in files if f != os.path.normpath("config/config.yaml")]


def _stage_commands(dvc_yaml: str | Path) -> dict[str, str]:
    """Stage name -> its command, from ``dvc.yaml`` (a broken file is refused naming it, not a traceback)."""
    path = Path(dvc_yaml)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
        stages = data.get("stages") or {} if isinstance(data, dict) else None
        if not isinstance(stages, dict):
            raise ValueError("'stages' is not a mapping")
        return {str(name): str((stage or {}).get("cmd", "")) if isinstance(stage, dict) else "" for name, stage
                in stages.items()}
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable dvc.yaml ({short(str(exc).splitlines()[0], 200)}); restore it "
                          "with git (`git checkout dvc.yaml`)") from None


def profile_stages(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, list[str]]:
    """Stage (= run) name -> the overlays its ``make pipeline`` command runs with."""
    out = {}
    for name, cmd in _stage_commands(dvc_yaml).items():
        if cmd.startswith(COMMAND):
            try:
                out[name] = _normalise(" ".join(shlex.split(cmd.removeprefix(COMMAND))).split())
            except ValueError:  # unbalanced quotes: an edited command
                continue
    return out


def shipped_dvc_yaml(text: str) -> str:
    """``dvc.yaml`` as the project ships it: no run stages (``make reproduce`` adds them, and a user
    commits them), every other line kept. What the tests' project copies start from, so that a
    checkout where runs were made tests the same project as a fresh clone."""
    import io

    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.indent(mapping=2, sequence=4, offset=2)
    data = rt.load(text)
    if not isinstance(data, dict) or not data.get("stages"):
        return text
    data["stages"] = {}
    out = io.StringIO()
    rt.dump(data, out)
    return out.getvalue()


def stage_command(configfiles: Sequence[str]) -> str:
    return f'{COMMAND}"{" ".join(_normalise(configfiles))}"'


def add_stage_argv(run: str, prepared: str, configfiles: Sequence[str]) -> list[str]:
    """``dvc stage add`` for a run: code, workflow and config as dependencies, its two folders as
    persistent outputs (DVC never deletes them, so Snakemake sees its earlier outputs)."""
    argv = ["dvc", "stage", "add", "--quiet", "-n", run]
    for dep in DEPS:
        argv += ["-d", dep]
    argv += ["-p", PARAMS, "--outs-persist", prepared, "--outs-persist", f"results/{run}",
             stage_command(configfiles)]
    return argv


def stage_for(run: str, configfiles: Sequence[str], dvc_yaml: str | Path = "dvc.yaml") -> tuple[str | None, str]:
    """(the run's stage, "") when it exists with exactly these overlays; (None, note) when the run's
    stage runs other overlays; (None, "") when the run has no stage yet."""
    stages = profile_stages(dvc_yaml)
    given = _normalise(configfiles)
    if run not in stages:
        other = _stage_commands(dvc_yaml).get(run)
        if other is not None:
            return None, (f"note: dvc.yaml has a stage '{run}' whose command is not this project's "
                          f"({short(other, 80)}): Snakemake runs directly; restore or remove that stage "
                          "(`git checkout dvc.yaml`) to record the run with DVC.")
        return None, ""
    if stages[run] != given:
        return None, (f"note: results/{run} belongs to the DVC stage '{run}', which runs with "
                      f"[{' '.join(stages[run])}], not [{' '.join(given)}]: Snakemake runs directly and "
                      f"`dvc status` will list the stage as changed. Set a run_tag in your overlay to give "
                      f"it its own folder (docs/sharing.md).")
    return run, ""


def ensure_stage(run: str, prepared: str, configfiles: Sequence[str],
                 dvc_yaml: str | Path = "dvc.yaml") -> tuple[str | None, str]:
    """The run's stage, added to ``dvc.yaml`` first if the run has none (see ``stage_for``)."""
    stage, note = stage_for(run, configfiles, dvc_yaml)
    if stage is None and not note:
        proc = subprocess.run(add_stage_argv(run, prepared, configfiles), capture_output=True, text=True,
                              cwd=Path(dvc_yaml).parent)
        if proc.returncode != 0:
            reason = (proc.stderr.strip() or proc.stdout.strip() or f"dvc exited with {proc.returncode}").splitlines()
            return None, (f"note: could not add the DVC stage '{run}' ({short(reason[-1], 200)}); "
                          "Snakemake runs directly.")
        stage, _ = stage_for(run, configfiles, dvc_yaml)
        note = f"added the DVC stage '{run}' to dvc.yaml (commit it with dvc.lock)"
    return stage, note

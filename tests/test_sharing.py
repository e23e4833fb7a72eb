"""Each run has its own folders and DVC stage; `make reproduce` adds the stage the first time and uses it
only when the overlays are exactly the stage's (issue 16)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from conftest import BIN, env_with_venv
from unlearn_da.settings.config import load_config, validate_config
from unlearn_da.pipeline import prepared_dir, run_name
from unlearn_da.plumbing.sharing import ensure_stage, profile_stages, stage_for
from unlearn_da.tools.smoke import copy_project

SHIPPED = [[], ["config/quick.yaml"], ["config/backdoor.yaml"], ["config/fashion-mnist.yaml"],
           ["config/fashion-mnist.yaml", "config/backdoor.yaml"], ["config/cifar10.yaml"],
           ["config/cifar10.yaml", "config/cifar100.yaml"]]


def test_every_shipped_profile_has_its_own_folders():
    folders, names = set(), set()
    for overlays in SHIPPED:
        cfg = validate_config(load_config(overlays), sources=["config/config.yaml", *overlays])
        names.add(run_name(cfg))
        folders |= {prepared_dir(cfg), f"results/{run_name(cfg)}"}
    assert len(names) == len(SHIPPED) and len(folders) == 2 * len(SHIPPED)  # no two runs share an output
    assert {"digits-smallcnn", "digits-smallcnn-quick", "digits-smallcnn-backdoor", "cifar100-resnet18",
            "fashion_mnist-smallcnn-backdoor"} <= names


def test_the_shipped_dvc_yaml_declares_no_stage(pristine):
    """A stage exists only once its run was made: `dvc status` then lists nothing that was not run."""
    spec = yaml.safe_load((pristine / "dvc.yaml").read_text())
    assert spec["stages"] == {} and spec["metrics"] and spec["plots"]


def test_a_checkout_where_runs_were_made_copies_to_the_shipped_project(pristine, tmp_path):
    """`make reproduce` adds its stage to dvc.yaml, writes dvc.lock, results/ and data/; the tests'
    project copies must not see any of it (they failed after `make reproduce` when they did)."""
    user = copy_project(tmp_path / "user", root=pristine)
    shipped = (user / "dvc.yaml").read_text()
    (user / "dvc.yaml").write_text(shipped.replace(
        "stages: {}", 'stages:\n  digits-smallcnn:\n    cmd: make --no-print-directory pipeline PROFILE=""\n'
        "    deps:\n    - config\n    outs:\n    - results/digits-smallcnn:\n        persist: true\n"))
    (user / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (user / "results" / "digits-smallcnn").mkdir(parents=True)
    assert yaml.safe_load((user / "dvc.yaml").read_text())["stages"]  # the user's run state
    copy = copy_project(tmp_path / "copy", root=user)
    assert yaml.safe_load((copy / "dvc.yaml").read_text()) == yaml.safe_load(shipped)
    assert (copy / "dvc.yaml").read_text().startswith("# DVC's view of the pipeline")
    assert not (copy / "dvc.lock").exists() and not (copy / "results").exists()


@pytest.fixture
def repo(tmp_path, pristine):
    """An empty DVC repo with the project's dvc.yaml."""
    shutil.copy2(pristine / "dvc.yaml", tmp_path / "dvc.yaml")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=tmp_path, check=True, env=env_with_venv())
    return tmp_path


def test_the_first_run_adds_its_stage_and_later_runs_reuse_it(repo, monkeypatch):
    monkeypatch.setenv("PATH", env_with_venv()["PATH"])
    dvc_yaml = repo / "dvc.yaml"
    stage, note = ensure_stage("digits-smallcnn-quick", "data/prepared/digits-smallcnn-quick",
                               ["config/quick.yaml"], dvc_yaml)
    assert stage == "digits-smallcnn-quick" and "added the DVC stage" in note
    spec = yaml.safe_load(dvc_yaml.read_text())
    added = spec["stages"]["digits-smallcnn-quick"]
    assert added["cmd"] == 'make --no-print-directory pipeline PROFILE="config/quick.yaml"'
    assert sorted(added["deps"]) == ["Snakefile", "config", "src/unlearn_da", "workflow"]
    assert added["outs"] == [{"data/prepared/digits-smallcnn-quick": {"persist": True}},
                             {"results/digits-smallcnn-quick": {"persist": True}}]
    assert "metrics" in spec and dvc_yaml.read_text().startswith("# DVC's view of the pipeline")
    # the same overlay, spelled another way, is the same stage; nothing is added twice
    assert ensure_stage("digits-smallcnn-quick", "x", ["./config/quick.yaml"], dvc_yaml) == ("digits-smallcnn-quick", "")
    assert profile_stages(dvc_yaml) == {"digits-smallcnn-quick": ["config/quick.yaml"]}
    # the default run: no overlays
    assert ensure_stage("digits-smallcnn", "data/prepared/digits-smallcnn", [], dvc_yaml)[0] == "digits-smallcnn"
    assert stage_for("digits-smallcnn", ["config/config.yaml"], dvc_yaml) == ("digits-smallcnn", "")


@pytest.mark.parametrize("overlays", [["my-lr.yaml"], ["config/quick.yaml", "my-lr.yaml"]])
def test_an_overlay_that_writes_into_another_stage_folder_runs_without_it(repo, overlays, monkeypatch):
    monkeypatch.setenv("PATH", env_with_venv()["PATH"])
    dvc_yaml = repo / "dvc.yaml"
    run = "digits-smallcnn" if len(overlays) == 1 else "digits-smallcnn-quick"
    ensure_stage(run, f"data/prepared/{run}", overlays[:-1], dvc_yaml)  # the profile's own run came first
    stage, message = ensure_stage(run, f"data/prepared/{run}", overlays, dvc_yaml)
    assert stage is None and f"belongs to the DVC stage '{run}'" in message and "run_tag" in message
    assert list(profile_stages(dvc_yaml)) == [run]  # nothing added


def test_a_stage_whose_command_was_edited_is_named_with_its_command(repo, monkeypatch):
    """A stage of the run's name that runs another command: a note naming it and its command, not an
    attempt to add the stage again whose failure had no reason."""
    monkeypatch.setenv("PATH", env_with_venv()["PATH"])
    dvc_yaml = repo / "dvc.yaml"
    ensure_stage("digits-smallcnn-quick", "x", ["config/quick.yaml"], dvc_yaml)
    dvc_yaml.write_text(dvc_yaml.read_text().replace("make --no-print-directory pipeline", "make my-own-target"))
    stage, note = ensure_stage("digits-smallcnn-quick", "x", ["config/quick.yaml"], dvc_yaml)
    assert stage is None
    assert "stage 'digits-smallcnn-quick' whose command is not this project's" in note
    assert "make my-own-target" in note and "git checkout dvc.yaml" in note


@pytest.mark.parametrize("text", ["stages: [1, 2\n", "stages: 3\n", "\tstages: {}\n"],
                         ids=["unclosed", "not a mapping", "tab"])
def test_a_broken_dvc_yaml_is_one_line_naming_it(repo, text):
    (repo / "dvc.yaml").write_text(text)
    proc = subprocess.run([str(BIN / "python"), "-m", "unlearn_da", "dvc-stage"], cwd=repo, capture_output=True,
                          text=True, env=env_with_venv())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "dvc.yaml: not a readable dvc.yaml" in proc.stderr and "git checkout dvc.yaml" in proc.stderr


def test_params_yaml_is_read_last_and_may_not_rename_the_run(tmp_path):
    """DVC's parameters file (what `dvc exp run -S` writes) overlays the profile, and may not set the keys
    that name the run's folders (the stage's outputs)."""
    import subprocess
    import sys

    from conftest import REPO, env_with_venv

    params = tmp_path / "params.yaml"
    params.write_text("unlearn: {ft: {lr: 0.2}}\n")
    ok = subprocess.run([sys.executable, "-m", "unlearn_da", "check-config", "--configfile", "config/quick.yaml",
                         str(params)], cwd=REPO, env=env_with_venv(), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    params.write_text("run_tag: other\n")
    bad = subprocess.run([sys.executable, "-m", "unlearn_da", "check-config", "--configfile", str(params)], cwd=REPO,
                         env=env_with_venv(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "sets run_tag, which name(s) the run's folders" in bad.stderr
    dry = subprocess.run(["make", "-n", "--no-print-directory", "pipeline", "PROFILE=config/quick.yaml"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert "--configfile config/quick.yaml params.yaml" in dry.stdout

"""Each shipped profile has its own run folder and DVC stage; `make reproduce` picks the stage only when
the overlays are exactly the stage's (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearn_da.config import load_config, validate_config
from unlearn_da.pipeline import prepared_dir, run_name
from unlearn_da.sharing import profile_stages, stage_for


def test_every_shipped_profile_has_its_own_stage_and_folders():
    stages = profile_stages("dvc.yaml")
    assert len(stages) >= 7
    folders = set()
    for run, overlays in stages.items():
        cfg = validate_config(load_config(overlays), sources=["config/config.yaml", *overlays])
        assert run_name(cfg) == run, overlays  # the stage's outputs are the folders the run writes
        folders |= {prepared_dir(cfg), f"results/{run}"}
        assert stage_for(run, overlays) == (f"run@{run}", "")
    assert len(folders) == 2 * len(stages)  # no two stages share an output
    for profile in Path("config").glob("*.yaml"):
        if profile.name not in {"config.yaml", "smoke-paper.yaml", "cifar100.yaml"}:
            assert [str(profile)] in stages.values(), f"{profile} has no DVC stage"


def test_quick_and_backdoor_profiles_do_not_write_into_the_default_folder():
    names = {run_name(load_config(files)) for files in ([], ["config/quick.yaml"], ["config/backdoor.yaml"],
                                                       ["config/fashion-mnist.yaml", "config/backdoor.yaml"])}
    assert names == {"digits-smallcnn", "digits-smallcnn-quick", "digits-smallcnn-backdoor",
                     "fashion_mnist-smallcnn-backdoor"}


@pytest.mark.parametrize("overlays, note", [
    (["my-lr.yaml"], "belongs to the DVC stage run@digits-smallcnn"),  # same folder, other values
    (["config/quick.yaml", "my-lr.yaml"], "belongs to the DVC stage run@digits-smallcnn-quick"),
])
def test_an_overlay_that_is_not_the_stage_runs_without_it(overlays, note):
    run = "digits-smallcnn" if len(overlays) == 1 else "digits-smallcnn-quick"
    stage, message = stage_for(run, overlays)
    assert stage is None and note in message and "run_tag" in message


def test_a_run_without_a_stage_is_told_how_to_add_one():
    stage, message = stage_for("digits-smallcnn-mine", ["mine.yaml"])
    assert stage is None
    assert "no DVC stage for the run 'digits-smallcnn-mine'" in message
    assert "'digits-smallcnn-mine: {profile: mine.yaml}'" in message
    # the same overlay spelled another way is the same stage
    assert stage_for("digits-smallcnn-quick", ["./config/quick.yaml"]) == ("run@digits-smallcnn-quick", "")
    assert stage_for("digits-smallcnn", ["config/config.yaml"]) == ("run@digits-smallcnn", "")

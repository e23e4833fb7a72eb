"""Which DVC stage records a profile's outputs (``make reproduce`` runs it with ``dvc repro``).

``dvc.yaml`` has one stage per shipped profile, ``run@<run name>``, whose ``profile`` item
is the list of overlays the stage passes to Snakemake. ``make reproduce`` goes through the
stage only when the overlays it was given are exactly the stage's: a user overlay that
writes into a shipped profile's folder (same run name, other values) must not be run as
the shipped profile. Then Snakemake runs directly and a note says how to get a stage.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml

STAGE_GROUP = "run"


def _normalise(configfiles: Sequence[str]) -> list[str]:
    files = [os.path.normpath(f) for f in configfiles if f.strip()]
    return [f for f in files if f != os.path.normpath("config/config.yaml")]


def profile_stages(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, list[str]]:
    """Run name -> the overlays its stage runs with, from the ``run`` stage's ``foreach``."""
    path = Path(dvc_yaml)
    if not path.exists():
        return {}
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {})
    items = (stages.get(STAGE_GROUP) or {}).get("foreach") or {}
    return {name: _normalise(str(item.get("profile", "")).split()) for name, item in items.items()}


def stage_for(run: str, configfiles: Sequence[str], dvc_yaml: str | Path = "dvc.yaml") -> tuple[str | None, str]:
    """(``run@<run>`` or None, a note for the user when there is no stage to run)."""
    stages = profile_stages(dvc_yaml)
    given = _normalise(configfiles)
    if run not in stages:
        return None, (f"note: no DVC stage for the run '{run}' in {dvc_yaml}: Snakemake runs directly and "
                      f"dvc.lock will not record results/{run}. To share it, add '{run}: {{profile: "
                      f"{' '.join(given)}}}' to the foreach of stage '{STAGE_GROUP}' (README, 'Sharing artifacts').")
    if stages[run] != given:
        return None, (f"note: results/{run} belongs to the DVC stage {STAGE_GROUP}@{run}, which runs with "
                      f"[{' '.join(stages[run])}], not [{' '.join(given)}]: Snakemake runs directly and "
                      f"`dvc status` will list the stage as changed. Set a run_tag in your overlay to give "
                      f"it its own folder (README, 'Sharing artifacts').")
    return f"{STAGE_GROUP}@{run}", ""

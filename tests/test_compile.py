"""precision.compile: on, the small CNN trains to the accuracy it reaches without compiling, and a
second job reuses Inductor's cache in the project (.cache/inductor). Minutes of CPU (Inductor
compiles C++ here): `make test-compile`, not part of `make test`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import env_with_venv
from unlearn_da.settings.config import load_config, validate_config
from unlearn_da.pipeline import train_params

pytestmark = pytest.mark.compile


def train(pristine: Path, data: Path, cwd: Path, out: str, compile_: str) -> dict:
    cfg = validate_config(load_config([pristine / "tests/config/tiny.yaml"], base=pristine / "config/config.yaml"))
    params = {**train_params(cfg), "device": "cpu"}
    params["precision"] = {**params["precision"], "compile": compile_}
    params["train"] = {**params["train"], "epochs": 3}
    subprocess.run([sys.executable, "-m", "unlearn_da", "train", "--data", str(data), "--role", "original",
                    "--seed", "0", "--threads", "1", "--params", json.dumps(params), "--out", out],
                   cwd=cwd, env=env_with_venv(), check=True, capture_output=True, text=True)
    return json.loads((cwd / f"{out}.meta.json").read_text())


def test_compiled_training_reaches_the_same_accuracy_and_a_second_job_reuses_the_cache(pristine, digits_file,
                                                                                       tmp_path):
    plain = train(pristine, digits_file, tmp_path, "plain.pt", "off")
    first = train(pristine, digits_file, tmp_path, "first.pt", "on")
    second = train(pristine, digits_file, tmp_path, "second.pt", "on")
    print(f"train original, 3 epochs: not compiled {plain['seconds']:.1f} s; compiled, first job "
          f"{first['seconds']:.1f} s (compiles), second job {second['seconds']:.1f} s (from the cache)")
    assert any((tmp_path / ".cache" / "inductor").rglob("*"))
    assert second["seconds"] < first["seconds"] / 2
    assert abs(first["val_acc"] - plain["val_acc"]) <= 3.0 and abs(second["val_acc"] - plain["val_acc"]) <= 3.0
    assert first["params"]["precision"]["compile"] == "on"
    # the images are counted outside the compiled region (models.Classifier.__call__): the same counts
    assert first["images"] == second["images"] == plain["images"]


def test_gpu_checks_compile_measurement_fills_the_cache_and_reuses_it(tmp_path):
    """``gpu-check``'s compile on/off rows (``devicecost.measure_compile``) at toy size: the second compiled
    process warms up from the cache the first one filled."""
    from unlearn_da.tools.concurrency import measure, profile_spec
    from unlearn_da.tools.devicecost import measure_compile

    spec = profile_spec(load_config(), "cpu", amp=False, channels_last=True, threads=1, window_s=1.0,
                        warmup_steps=2)
    off = measure(spec, 1)
    rows = measure_compile(spec, off, tmp_path / "cache", log=print)
    assert [r["mode"] for r in rows] == ["off", "on, cold cache", "on, warm cache"]
    assert any((tmp_path / "cache").rglob("*"))
    assert rows[2]["warmup_s"] < rows[1]["warmup_s"] / 2
    assert all(r["aggregate_img_s"] > 0 for r in rows)

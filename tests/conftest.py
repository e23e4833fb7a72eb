"""Shared fixtures: a scratch copy of the project for pipeline runs, a tiny prepared data set."""

from __future__ import annotations

# first, before anything loads torch or numpy: the package pins the CPU kernels (kernels.py),
# which the libraries read only when they load; the suite tests the default, portable mode
import os  # isort: skip

os.environ["UNLEARN_DA_CPU_KERNELS"] = "portable"
# the suite checks exact CPU results (expected/, portable kernels): on a GPU machine `device: auto` would
# train in bf16 on CUDA and fake-GPU tests would reach a real device, so every test and every process
# it starts sees no GPU, unless UNLEARN_DA_TEST_GPU=1 (then only the tests marked `gpu` are meant to run)
TEST_GPU = os.environ.get("UNLEARN_DA_TEST_GPU") == "1"
if not TEST_GPU:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
import unlearn_da  # noqa: F401,E402  isort: skip

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# The modules in the order `make test`'s workers take them (pytest-xdist, --dist loadscope, no reorder):
# the module that makes the tiny run and the other long runs first, so that while one worker makes the
# tiny run the other runs what does not need it; then the longest of the rest; the others as collected.
FIRST_MODULES = ("test_pipeline_e2e.py", "test_audit.py", "test_reliability.py", "test_backdoor.py", "test_own_method.py", "test_dvc.py",
                 "test_device_pool.py", "test_kernels.py", "test_reproduction.py", "test_figures.py", "test_workload.py",
                 "test_profiles.py")


def pytest_collection_modifyitems(session, config, items) -> None:
    rank = {name: i for i, name in enumerate(FIRST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's own order kept
    if not TEST_GPU:
        skip = pytest.mark.skip(reason="needs a GPU: UNLEARN_DA_TEST_GPU=1 on a GPU machine (make gpu-check)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def copy_project(dest: Path) -> Path:
    """Copy the workflow (not outputs, not the venv) into ``dest``."""
    from unlearn_da.tools.smoke import copy_project as _copy

    return _copy(dest, REPO)


def env_with_venv() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def snakemake(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env or env_with_venv(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def dry_run_jobs(cwd: Path, *args: str) -> dict[str, int]:
    """rule -> job count that ``snakemake -n`` plans ({} when nothing is to be done)."""
    proc = snakemake(cwd, "-n", "--quiet", "rules", *args)
    text = proc.stdout + proc.stderr
    counts: dict[str, int] = {}
    in_table = False
    for line in text.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] != "total":
                    counts[parts[0]] = int(parts[1])
            elif parts and not set(line.strip()) <= {"-", " "}:
                in_table = False
    return counts


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    """The project as it ships (tracked workflow files, no run stages, no outputs), for tests that
    read shipped files such as dvc.yaml: never the working tree, where a user's runs change them."""
    return copy_project(tmp_path_factory.mktemp("pristine"))


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` run once per test session, also when pytest-xdist spreads the tests over
    worker processes (``make test`` runs two): the workers share the parent of their temporary
    folders, and an OS file lock makes the others wait for the first to finish. A build that
    failed is started again by the next test that asks for it."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this worker dies
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """A project copy that has completed one run of the tiny config, shared by the slow tests (and
    their xdist workers): they read it, and a test that runs anything more in it works on a copy
    (``tiny_copy``).

    Every command of the run appends the package modules it imported to ``trace.jsonl``
    (UNLEARN_DA_TRACE): the code-hash test reads it instead of running the DAG again.
    """

    def build(folder: Path) -> None:
        root = copy_project(folder)
        env = {**env_with_venv(), "UNLEARN_DA_TRACE": str(root / "trace.jsonl")}
        snakemake(root, "--configfile", "tests/config/tiny.yaml", env=env)

    return built_once(tmp_path_factory, "tiny-project", build)


def remove_model_chain(root: Path, scenario: str, model: str) -> None:
    """Remove one model of the tiny run's seed 0 from ``root`` (a ``tiny_copy``): its checkpoint,
    sidecar, step log (unlearned models have one), features and metrics."""
    seed_dir = root / "results" / "digits-smallcnn" / scenario / "seed0"
    for name in (f"models/{model}.pt", f"models/{model}.pt.meta.json", f"models/{model}.steps.csv",
                 f"features/{model}.npz", f"features/{model}.npz.meta.json", f"metrics/{model}.json"):
        (seed_dir / name).unlink(missing_ok=True)


def tiny_copy(tiny_project: Path, dest: Path) -> Path:
    """A copy of the finished tiny run (outputs, Snakemake's metadata, times kept) to run more in."""
    shutil.copytree(tiny_project, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def digits_file(tmp_path_factory) -> Path:
    from unlearn_da.data.prepared import prepare

    out = tmp_path_factory.mktemp("data") / "dataset.npz"
    prepare("digits", {"val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0}, out)
    return out


def train_small_cnn(digits_file: Path, epochs: int, seed_init: bool = True):
    """A small CNN (with BatchNorm) trained on the digits train set for ``epochs``, seed 0, one
    thread; returns (model in eval mode, x, y, preprocessor) with the data as CPU tensors.
    ``seed_init``: seed before building the model (its initialisation), as test_methods and
    test_fidelity always did; test_da's fixture seeded only the data order (False)."""
    import torch

    from unlearn_da.data.prepared import load_prepared
    from unlearn_da.core.models import build_model, model_spec
    from unlearn_da.core.runtime import seed_everything
    from unlearn_da.core.training import Preprocessor, fit

    torch.set_num_threads(1)
    data = load_prepared(digits_file)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    prep = Preprocessor(data.mean, data.std, 16.0, torch.device("cpu"))
    spec = model_spec("smallcnn", 10, 1, 8, 8)
    if seed_init:  # seeded before the model is built: its initial weights are fixed too
        generator = seed_everything(0)
        model = build_model(spec)
    else:  # seeded after: only the training order is fixed (test_da's models)
        model = build_model(spec)
        generator = seed_everything(0)
    fit(model, x, y, prep, {"epochs": epochs, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "schedule": "cosine"},
        generator=generator, log=lambda m: None)
    return model.eval(), x, y, prep

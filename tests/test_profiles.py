"""Every profile validates, and the paper DAG plans on the SLURM profile without a cluster."""

from __future__ import annotations

import json

from pathlib import Path

import pytest

from conftest import copy_project, dry_run_jobs, snakemake
from unlearn_da.settings.config import load_config, tuning_space, validate_config
from unlearn_da.tuning.provenance import problems, tuned_marks

PROFILES = [[], ["config/quick.yaml"], ["config/fashion-mnist.yaml"], ["config/cifar10.yaml"],
            ["config/cifar10.yaml", "config/cifar100.yaml"], ["tests/config/tiny.yaml"]]


@pytest.mark.parametrize("files", PROFILES, ids=lambda f: "+".join(Path(p).stem for p in f) or "default")
def test_profile_is_valid(files):
    validate_config(load_config(files), sources=["config/config.yaml", *files])


SHIPPED = [[], ["config/quick.yaml"], ["config/backdoor.yaml"], ["config/fashion-mnist.yaml"], ["config/cifar10.yaml"],
           ["config/cifar10.yaml", "config/cifar100.yaml"]]


@pytest.mark.parametrize("files", SHIPPED, ids=lambda f: "+".join(Path(p).stem for p in f) or "default")
def test_every_tuned_value_comes_from_a_search_of_today_s_code(files):
    """A value marked tuned names the search that chose it (tuning.selection); that search recorded its space,
    budget, seeds and the code of each method, the shared training code and the scoring code, and all of it
    is today's. A profile of other data inherits no value tuned on digits (CIFAR: a stated rule instead)."""
    found = problems(files)
    assert not found, f"{len(found)} problem(s):\n" + "\n".join(found[:25])


def _profile(tmp_path, selection: dict | None, energy: dict | None = None, **over) -> Path:
    """A copy of the default config whose tuning artifacts are the given dicts (written beside it)."""
    import yaml

    cfg = load_config()
    for name, value in (("selection", selection), ("da_energy", energy)):
        if value is None:
            cfg["tuning"][name] = None
        else:
            (tmp_path / f"{name}.json").write_text(json.dumps(value))
            cfg["tuning"][name] = str(tmp_path / f"{name}.json")
    for path, value in over.items():
        node = cfg
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    out = tmp_path / "config.yaml"
    out.write_text(Path("config/config.yaml").read_text().split("\n", 1)[0] + "\n" + yaml.safe_dump(cfg))
    return out


def _fresh_selection(cfg: dict) -> dict:
    """A selection as `make tune` writes it today, choosing exactly the profile's values."""
    from unlearn_da import pipeline as P

    chosen = {m: {"values": {k: cfg["unlearn"][m][k] for k in space}} for m, space in tuning_space(cfg).items()}
    for m in P.da_tuning_methods(cfg):
        chosen[f"{m}+da"] = {"values": {**chosen[m]["values"], "da_weight": cfg["unlearn"]["da"]["weights"][m]}}
    return {"rule": "test", "chosen": chosen, **P.tuning_provenance(cfg)}


def _fresh_energy(cfg: dict) -> dict:
    from unlearn_da import pipeline as P

    return {"chosen_energy": cfg["evaluation"]["da"]["energy"], **P.da_energy_provenance(cfg)}


def test_a_selection_of_today_s_code_and_values_has_no_problem(tmp_path):
    cfg = load_config()
    assert problems(base=_profile(tmp_path, _fresh_selection(cfg), _fresh_energy(cfg))) == []


def test_a_value_searched_with_other_method_code_is_stale(tmp_path):
    """SSD's alpha and lambda chosen before its batching changed: the method's code hash differs."""
    cfg = load_config()
    selection = _fresh_selection(cfg)
    selection["code"]["ssd"]["method"] = "0123456789abcdef"
    found = problems(base=_profile(tmp_path, selection, _fresh_energy(cfg)))
    assert len(found) == 1 and "ssd was searched with other code (method:" in found[0], found


def test_a_changed_training_code_hash_or_search_space_makes_every_value_stale(tmp_path):
    cfg = load_config()
    selection = _fresh_selection(cfg)
    for code in selection["code"].values():
        code["training"] = "0123456789abcdef"
    selection["search"]["space"]["ft"] = {"lr": ["log", 0.001, 0.1]}
    found = problems(base=_profile(tmp_path, selection, _fresh_energy(cfg)))
    assert len(found) == len(selection["code"]) + 1
    assert any("ft's search space today" in f for f in found)


def test_a_profile_value_that_differs_from_its_selection_is_found(tmp_path):
    cfg = load_config()
    selection = _fresh_selection(cfg)
    base = _profile(tmp_path, selection, _fresh_energy(cfg), **{"unlearn.ssd.alpha": 6.0})
    found = problems(base=base)
    assert found == [f"unlearn.ssd.alpha: the profile has 6.0, {tmp_path / 'selection.json'} chose "
                     f"{cfg['unlearn']['ssd']['alpha']!r}"]


def test_a_value_marked_tuned_that_no_search_chose_is_found(tmp_path):
    cfg = load_config()
    base = _profile(tmp_path, _fresh_selection(cfg), _fresh_energy(cfg))
    text = base.read_text().replace("\n  lambda_sd:", "\n  lambda_sd:", 1)
    lines = [line + "  # tuned" if line.strip().startswith("lambda_sd:") else line for line in text.splitlines()]
    base.write_text("\n".join(lines) + "\n")
    found = problems(base=base)
    assert len(found) == 1 and "unlearn.muda.lambda_sd is marked tuned" in found[0], found


def test_an_energy_chosen_by_other_code_or_not_the_profile_s_is_found(tmp_path):
    cfg = load_config()
    energy = _fresh_energy(cfg)
    energy["code"]["training"] = "0123456789abcdef"
    energy["chosen_energy"] = 0.5
    found = problems(base=_profile(tmp_path, _fresh_selection(cfg), energy))
    assert len(found) == 2 and "evaluation.da.energy: the profile has" in found[0] and "make da-energy" in found[1]


def test_a_profile_of_other_data_inherits_no_value_tuned_on_digits(tmp_path):
    """An overlay that changes the data set but names no search of its own, or names one (or null) and
    leaves digits-tuned values in place, is refused, key by key."""
    cfg = load_config()
    base = _profile(tmp_path, _fresh_selection(cfg), _fresh_energy(cfg))
    same = tmp_path / "other-data.yaml"
    same.write_text("dataset: fashion_mnist\n")
    found = problems([same], base=base)
    assert any("tuning.selection" in f and "names its own, or null" in f for f in found)
    own = tmp_path / "own-null.yaml"
    own.write_text("dataset: fashion_mnist\ntuning: {selection: null, da_energy: null}\n"
                   "unlearn: {ft: {lr: 0.01, epochs: 3}}\n")
    found = problems([own], base=base)
    inherited = {f.split(":")[0] for f in found if "inherited from" in f}
    assert "unlearn.ft.lr" not in inherited and "unlearn.ssd.alpha" in inherited
    assert "unlearn.da.weights.ft" in inherited and "evaluation.da.energy" in inherited


def test_tuned_marks_read_both_forms_and_refuse_an_ambiguous_one(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("unlearn:\n  ft:\n    lr: 0.1  # tuned (why)\n    epochs: 3\n"
                 "  ga: {lr: 0.01, epochs: 2, batch_size: 8}  # tuned: lr, epochs\n")
    assert tuned_marks(f) == {("unlearn", "ft", "lr"), ("unlearn", "ga", "lr"), ("unlearn", "ga", "epochs")}
    f.write_text("unlearn:\n  ga: {lr: 0.01, epochs: 2}  # tuned\n")
    with pytest.raises(ValueError, match="name them"):
        tuned_marks(f)
    f.write_text("unlearn:\n  ga: {lr: 0.01}  # tuned: lr, momentum\n")
    with pytest.raises(ValueError, match="momentum"):
        tuned_marks(f)


def _centre(spec: list):
    kind, *rest = spec
    if kind == "choice":
        return rest[0]
    low, high = rest[:2]
    if kind == "log":
        return (low * high) ** 0.5
    return round((low + high) / 2) if kind == "int" else (low + high) / 2


def test_cifar_values_chosen_by_the_centre_rule_sit_at_the_centre_of_their_search_range():
    """config/cifar10.yaml "(ours: centre)": MUDA's untuned keys at the centre of the profile's own range
    (three significant digits), every "+da" weight at the middle of tuning.da_weights."""
    cfg = load_config(["config/cifar10.yaml"])
    text = Path("config/cifar10.yaml").read_text()
    space = cfg["tuning"]["space"]["muda"]
    marked = [line.split(":")[0].strip() for line in text.splitlines()
              if "(ours: centre)" in line.partition("#")[2] and not line.lstrip().startswith("#")]
    assert set(marked) >= {"lr", "lambda_da", "forget_loss", "basis_source", "weights"}, marked
    for key in set(marked) - {"weights"}:
        want, got = _centre(space[key]), cfg["unlearn"]["muda"][key]
        assert got == want if isinstance(want, str) else got == pytest.approx(float(f"{want:.3g}")), (key, got, want)
    grid = sorted(cfg["tuning"]["da_weights"])
    assert set(cfg["unlearn"]["da"]["weights"].values()) == {grid[len(grid) // 2]}
    assert set(cfg["unlearn"]["da"]["weights"]) == set(P_da_methods(cfg))


def P_da_methods(cfg: dict) -> list[str]:
    from unlearn_da.settings.config import method_base

    return sorted({method_base(m)[0] for m in cfg["unlearn"]["methods"] if method_base(m)[1]})


@pytest.mark.parametrize("files, trace", [([], "digits"), (["config/fashion-mnist.yaml"], "fashion-mnist")])
def test_tuned_values_in_the_profile_match_its_tuning_trace(files, trace):
    """The config and the tracked selection cannot drift apart: every chosen value is the config's, the
    DA weight of a "+da" variant is its unlearn.da.weights entry, and every searched method was chosen."""
    selection = json.loads(Path(f"config/tuning/{trace}-selection.json").read_text())
    chosen = {method: entry["values"] for method, entry in selection["chosen"].items()}
    cfg = load_config(files)
    assert {m for m in chosen if not m.endswith("+da")} == set(tuning_space(cfg))
    for method, values in chosen.items():
        base = method.removesuffix("+da")
        for key, value in values.items():
            if key == "da_weight":
                actual = cfg["unlearn"]["da"]["weights"].get(base)
            elif method.endswith("+da"):
                continue  # the base's values, checked with the base
            else:
                actual = cfg["unlearn"][base][key]
            assert actual == value and isinstance(actual, float) == isinstance(value, float), \
                f"{method}.{key}: config {actual!r}, selection {value!r}"


def test_cifar10_profile_follows_the_paper_recipe():
    cfg = load_config(["config/cifar10.yaml"])
    assert cfg["arch"] == "resnet18" and cfg["data"]["val_fraction"] == 0.1
    t = cfg["train"]
    assert (t["epochs"], t["batch_size"], t["lr"], t["momentum"], t["weight_decay"]) == (182, 256, 0.1, 0.9, 5e-4)
    assert t["augment"] == "crop_flip" and len(cfg["seeds"]) >= 3


def test_slurm_profile_plans_the_paper_dag(tmp_path):
    root = copy_project(tmp_path / "proj")
    args = ("--workflow-profile", "workflow/profiles/slurm", "--configfile", "config/cifar10.yaml")
    jobs = dry_run_jobs(root, *args)
    # 3 seeds x (random10, class0, backdoor10); the backdoor scenario has its own (poisoned) original
    assert jobs["train_original"] == 3 and jobs["train_original_backdoor"] == 3 and jobs["train_retrain"] == 18
    assert jobs["unlearn"] == 9 * len(load_config(["config/cifar10.yaml"])["unlearn"]["methods"])
    out = snakemake(root, "-n", *args).stdout
    for rule in ("train_original", "train_original_backdoor"):
        train = out[out.index(f"rule {rule}:"):][:2500]
        assert "slurm_partition=gpu" in train and "gpu=1" in train and "runtime=600" in train


def test_workload_estimate_scales_with_the_config():
    from unlearn_da.tools.bench import workload_images

    one = workload_images(load_config(["config/cifar10.yaml"]))
    more = load_config(["config/cifar10.yaml"])
    more["seeds"] = [0, 1, 2, 3, 4, 5]
    two = workload_images(more)
    assert two["stages"] == {stage: {kind: 2 * n for kind, n in v.items()} for stage, v in one["stages"].items()}
    assert two["total"] == pytest.approx(2 * one["total"])
    # 3 seeds x 182 epochs x 45,000 training images for the original models, twice: the shared
    # original and the backdoor scenario's poisoned one; then each one's 5,000 validation images
    assert one["stages"]["original"] == {"forward_backward": 2 * 3 * 182 * 45000, "forward_only": 2 * 3 * 5000}
    assert one["total"] == pytest.approx(one["forward_backward"] + one["forward_only"] / 3)


def test_the_workflow_passes_snakemake_lint(tmp_path):
    """`make lint`'s first step: functions in common.smk, names instead of indices, no paths built with +."""
    proc = snakemake(copy_project(tmp_path / "proj"), "--lint", check=False)
    assert proc.returncode == 0 and "good condition" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _ssd_batch_rule(n_forget: int, largest: int) -> int:
    """docs/methods.md, "SSD's batches" (ours): the largest batch size not above ``largest`` whose last forget
    batch holds at least half a batch (or none is left over)."""
    return next(size for size in range(min(largest, n_forget), 0, -1)
                if n_forget % size == 0 or 2 * (n_forget % size) >= size)


def test_the_ssd_batch_rule():
    assert [_ssd_batch_rule(n, 32) for n in (130, 128, 33, 5)] == [28, 32, 22, 5]
    assert _ssd_batch_rule(1080, 128) == 127 and _ssd_batch_rule(5000, 128) == 126


def test_the_digits_ssd_batches_leave_no_small_last_forget_batch(tmp_path):
    """On the digits splits: a last forget batch of 2 (130 at 32) decided SSD's result on three seeds."""
    from unlearn_da import pipeline as P
    from unlearn_da.data.prepared import load_prepared, prepare
    from unlearn_da.data.splits import make_split

    cfg = load_config()
    prepare("digits", P.data_params(cfg), tmp_path / "digits.npz")
    y = load_prepared(tmp_path / "digits.npz").y_train
    ssd = cfg["unlearn"]["ssd"]
    for scenario, key in (("random10", "batch_size"), ("class0", "class_batch_size")):
        n = len(make_split(y, scenario, 0).forget)
        assert ssd[key] == _ssd_batch_rule(n, 32), (scenario, n, ssd[key])


def test_a_tuned_value_s_code_hash_ignores_docstrings_and_comments_but_not_code(tmp_path, monkeypatch):
    """Editing a method's docstring does not make its tuned values stale; changing what it computes does."""
    from unlearn_da import pipeline as P

    package = tmp_path / "unlearn_da"
    (package / "methods").mkdir(parents=True)
    source = (P.PACKAGE_DIR / "methods/ssd.py").read_text()
    monkeypatch.setattr(P, "PACKAGE_DIR", package)

    def hashed(text: str) -> str:
        (package / "methods/ssd.py").write_text(text)
        P._semantic_digest.cache_clear()
        return P.semantic_hash("methods/ssd.py")

    try:
        base = hashed(source)
        assert hashed(source.replace("Selective Synaptic Dampening", "SSD (reworded)")) == base
        assert hashed(source.replace("    bs, alpha = scenario_values(ctx, hp)\n",
                                     "    bs, alpha = scenario_values(ctx, hp)  # a comment\n")) == base
        assert hashed(source.replace("max(1, batches)", "max(2, batches)")) != base
    finally:
        P._semantic_digest.cache_clear()

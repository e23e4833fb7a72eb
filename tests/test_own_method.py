"""A method in the user's own file (docs/own-method.md, methods/external.py): declared in a profile, refused by
name where it cannot run, run through every rule with its "+da" variant, tuned, and cached on its own code."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, dry_run_jobs, env_with_venv, snakemake, tiny_copy
from unlearn_da import pipeline as P
from unlearn_da.core.errors import ConfigError
from unlearn_da.settings.config import load_config, validate_config

EXAMPLE = "examples/own-method/forget_penalty.py"
OWN = ("--configfile", "tests/config/tiny.yaml", "tests/config/tiny-own.yaml")
METHOD_FILE = '''API_VERSION = 1
{extra}
def run(ctx, hp):
    pass
'''


def validate(overlay: dict) -> dict:
    return validate_config(load_config(overrides=overlay), sources=["config/config.yaml"])


def problems(overlay: dict) -> str:
    with pytest.raises(ConfigError) as err:
        validate(overlay)
    return str(err.value)


def own(tmp_path: Path, name: str = "mine", text: str = METHOD_FILE.format(extra=""), **unlearn) -> dict:
    """An overlay declaring the method ``name`` from a file holding ``text`` and running it."""
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return {"unlearn": {"external": {name: {"file": str(path)}}, "methods": [name],
                        name: {"epochs": 1, "batch_size": 8, "lr": 0.1}, **unlearn}}


def test_the_example_overlay_is_valid_and_its_hyper_parameters_follow_the_schema_its_file_declares():
    config = validate_config(load_config(["examples/own-method/overlay.yaml"]),
                             sources=["config/config.yaml", "examples/own-method/overlay.yaml"])
    assert P.unlearn_params(config, "forget_penalty+da")["source"] == {"file": EXAMPLE}
    assert "source" not in P.unlearn_params(config, "ft")  # a built-in's params are as they were
    message = problems({"unlearn": {"external": {"forget_penalty": {"file": EXAMPLE}}, "methods": ["forget_penalty"],
                                    "forget_penalty": {"epochs": 1, "batch_size": 8, "lr": 0.1, "beta": -1,
                                                       "forget_batch_size": 4, "gamma2": 1}}})
    assert "key 'unlearn.forget_penalty': unknown key(s) gamma2; allowed keys:" in message
    assert "beta" in message.split("allowed keys:")[1]
    message = problems({"unlearn": {"external": {"forget_penalty": {"file": EXAMPLE}}, "methods": ["forget_penalty"],
                                    "forget_penalty": {"epochs": 1, "batch_size": 8, "lr": 0.1, "beta": -1,
                                                       "forget_batch_size": 4}}})
    assert "key 'unlearn.forget_penalty.beta': -1 is out of range; must be >= 0" in message


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("ft", METHOD_FILE.format(extra=""), "key 'unlearn.external.ft': the name 'ft' is taken by a built-in method"),
    ("retrain", METHOD_FILE.format(extra=""), "the name 'retrain' is taken by a key of the unlearn block"),
    ("mine", "API_VERSION = 1\n", "defines no function run(ctx, hp) at the top level"),
    ("mine", "def run(ctx, hp):\n    pass\n", "API_VERSION = None is not one this package serves; allowed: 1"),
    ("mine", METHOD_FILE.format(extra="import not_an_installed_package_xyz"),
     "imports 'not_an_installed_package_xyz', which is not installed"),
    ("mine", METHOD_FILE.format(extra="from .helpers import x"), "a relative import"),
    ("mine", "API_VERSION = 1\ndef run(ctx, hp:\n", "not valid Python"),
    ("mine", METHOD_FILE.format(extra="HYPERPARAMETERS = dict(a=1)"), "HYPERPARAMETERS must be a literal"),
    ("mine", METHOD_FILE.format(extra="HYPERPARAMETERS = {'type': 'objekt'}"), "is not a valid JSON schema"),
    ("mine", METHOD_FILE.format(extra="HYPERPARAMETERS = {'$ref': 'https://example.org/s.json'}"),
     "refers to 'https://example.org/s.json'"),
    ("mine", METHOD_FILE.format(extra="DA_PLUGIN = False"), "DA_PLUGIN must be True or a sentence"),
    ("mine", METHOD_FILE.format(extra="#" * (1 << 20)), "larger than 1048576 bytes"),
])
def test_a_method_that_cannot_run_is_refused_before_the_first_job_by_name(tmp_path, name, text, expected):
    message = problems(own(tmp_path, name, text))
    assert expected in message, message
    assert f"unlearn.external.{name}" in message


def test_a_missing_file_or_module_is_refused_naming_the_key(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.py")
    message = problems({"unlearn": {"external": {"a": {"file": str(tmp_path / "nowhere.py")},
                                                 "b": {"module": "not_installed_xyz.methods"},
                                                 "c": {"file": str(tmp_path / "fifo.py")}}}})
    assert "key 'unlearn.external.a.file':" in message and "does not exist or is not a regular file" in message
    assert "key 'unlearn.external.c.file':" in message  # a special file is never opened
    assert "key 'unlearn.external.b.module': module 'not_installed_xyz.methods' cannot be imported" in message


def test_an_installed_module_is_a_source_and_its_package_files_are_its_code(tmp_path, monkeypatch):
    package = tmp_path / "my_lab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("SCALE = 1\n")
    (package / "method.py").write_text(METHOD_FILE.format(extra="from .helpers import SCALE"))
    monkeypatch.syspath_prepend(str(tmp_path))
    overlay = {"unlearn": {"external": {"mine": {"module": "my_lab.method"}}, "methods": ["mine", "mine+da"],
                           "mine": {"epochs": 1, "batch_size": 8, "lr": 0.1}}}
    config = validate(overlay)
    before = P.method_code(config, "mine")
    (package / "helpers.py").write_text("SCALE = 2\n")  # a sibling the method imports
    assert P.method_code(config, "mine") != before


def test_a_method_that_declares_it_cannot_take_the_da_term_is_refused_as_plus_da(tmp_path):
    text = METHOD_FILE.format(extra="DA_PLUGIN = 'it has no training loop'")
    message = problems(own(tmp_path, "mine", text, methods=["mine", "mine+da"]))
    assert "key 'unlearn.methods[1]': 'mine+da' is not allowed: it has no training loop" in message
    assert "mine" not in problems(own(tmp_path, "mine", text, methods=["ft"], da={"weights": {"mine": 1.0}})
                                  ).split("allowed:")[-1]


def test_the_code_hash_follows_the_user_s_file_and_a_tuned_value_only_what_it_computes(tmp_path):
    overlay = own(tmp_path, "mine", METHOD_FILE.format(extra=""), methods=["mine", "mine+da"])
    config = validate(overlay)
    job, tuned = P.method_code(config, "mine"), P.tuned_code(config, "mine")
    path = tmp_path / "mine.py"
    path.write_text('"""A docstring."""\n' + path.read_text() + "# a comment\n")
    assert P.method_code(config, "mine") != job  # the job reruns on any edit (Snakemake's params)
    assert P.tuned_code(config, "mine") == tuned  # a tuned value does not go stale on a docstring
    path.write_text(path.read_text().replace("pass", "return None"))
    assert P.tuned_code(config, "mine")["method"] != tuned["method"]
    assert P.method_code(config, "ft") == P.code_hash(*P.method_sources(config, "ft"))  # built-ins unchanged


def test_a_plus_da_job_whose_method_never_adds_the_da_term_fails_with_what_to_do(tiny_project, tmp_path):
    from unlearn_da.core.errors import PipelineError
    from unlearn_da.jobs.unlearn import run_unlearn

    overlay = own(tmp_path, "lazy", METHOD_FILE.format(extra=""), methods=["lazy+da"])
    config = load_config([tiny_project / "tests/config/tiny.yaml"], overlay, base=tiny_project / "config/config.yaml")
    params = P.unlearn_params(config, "lazy+da")
    run = P.run_name(config)
    with pytest.raises(PipelineError, match="never added the DA term.*DA_PLUGIN"):
        run_unlearn(str(tiny_project / P.prepared_dir(config) / "dataset.npz"),
                    str(tiny_project / P.prepared_dir(config) / "splits/class0/seed0"),
                    str(tiny_project / P.model_checkpoint(run, "class0", 0, "original")), "lazy+da", 0, 1, params,
                    str(tmp_path / "model.pt"), str(tmp_path / "steps.csv"))
    assert not (tmp_path / "model.pt").exists()


@pytest.fixture(scope="module")
def own_run(tiny_project, tmp_path_factory) -> Path:
    """The tiny run with the example method and its "+da" variant added (tests/config/tiny-own.yaml)."""
    root = tiny_copy(tiny_project, tmp_path_factory.mktemp("own") / "project")
    planned = dry_run_jobs(root, *OWN)
    snakemake(root, *OWN)
    root.joinpath("planned.json").write_text(json.dumps(planned))
    return root


def test_the_example_runs_through_every_rule_beside_the_built_ins(own_run):
    planned = json.loads((own_run / "planned.json").read_text())
    # only the example's jobs and what reads them: 2 methods x 2 scenarios, nothing trained again
    assert planned["unlearn"] == 4 and planned["metrics"] == 4
    assert "train_original" not in planned and "train_retrain" not in planned
    for scenario in ("random10", "class0"):
        base = own_run / "results/digits-smallcnn" / scenario
        rows = {r["model"]: r for r in csv.DictReader((base / "table.csv").open())}
        assert {"forget_penalty", "forget_penalty+da", "ft", "ft+da"} <= set(rows)
        plain, with_da = ({k: v for k, v in rows[m].items() if k != "model"} for m in ("forget_penalty",
                                                                                     "forget_penalty+da"))
        assert plain != with_da  # the DA term changed the model
        meta = json.loads((base / "seed0/models/forget_penalty+da.pt.meta.json").read_text())
        assert meta["params"]["source"] == {"file": EXAMPLE} and meta["params"]["da"]["lambda_da"] > 0
        steps = list(csv.DictReader((base / "seed0/models/forget_penalty+da.steps.csv").open()))
        assert {"ce", "to_uniform", "l_da"} <= set(steps[1])  # the method's own terms and the DA term
        summary = json.loads((base / "summary.json").read_text())
        assert "forget_penalty" in json.dumps(summary)
    assert dry_run_jobs(own_run, *OWN) == {}


def test_editing_the_example_reruns_exactly_its_jobs_and_what_reads_them(own_run, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(own_run, root, symlinks=True)
    method = root / EXAMPLE
    method.write_text(method.read_text().replace("beta * to_uniform", "2 * beta * to_uniform"))
    planned = dry_run_jobs(root, *OWN)
    assert planned.pop("unlearn") == 4 and planned.pop("metrics") == 4  # its 2 models in 2 scenarios
    assert set(planned) <= {"aggregate", "plots", "all"}, planned  # tables and figures read every model


def test_the_example_is_tuned_with_the_budget_of_every_method(own_run, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(own_run, root, symlinks=True)
    only = root / "only-own.yaml"  # the example alone is searched (the built-ins' search: test_pipeline_e2e.py)
    only.write_text("unlearn: {methods: [forget_penalty, forget_penalty+da]}\n")
    args = (*OWN, "tests/config/tiny-tune.yaml", str(only))
    snakemake(root, *args, "--", "tune")
    selection = json.loads((root / "results/digits-smallcnn/tuning/selection.json").read_text())
    tried = {m: c["tried"] for m, c in selection["chosen"].items()}
    budget = 2  # tests/config/tiny-tune.yaml: tuning.budget, the same for every method
    assert tried == {"forget_penalty": budget, "forget_penalty+da": budget}
    assert set(selection["chosen"]["forget_penalty"]["values"]) == {"lr", "beta"}
    code = selection["code"]["forget_penalty"]
    config = load_config([root / "tests/config/tiny.yaml", root / "tests/config/tiny-own.yaml",
                          root / "tests/config/tiny-tune.yaml", only], base=root / "config/config.yaml")
    assert code == P.tuned_code(config, "forget_penalty")  # the code it was searched with, named
    print(json.dumps(selection["chosen"]["forget_penalty"], indent=1))
    # the choice is written into the user's overlay as a built-in's is into a profile
    from unlearn_da.tuning.apply_selection import apply_selection

    overlay = tmp_path / "tiny-own.yaml"
    shutil.copy(root / "tests/config/tiny-own.yaml", overlay)
    changes = apply_selection(root / "results/digits-smallcnn/tuning/selection.json", overlay)
    assert any("forget_penalty" in line and "lr" in line for line in changes), changes
    chosen = load_config([overlay])["unlearn"]
    assert chosen["forget_penalty"]["beta"] == selection["chosen"]["forget_penalty"]["values"]["beta"]
    assert "forget_penalty" in chosen["da"]["weights"]


def test_the_example_file_runs_on_its_own_as_documented():
    """docs/own-method.md shows the file whole: it must stay importable without the pipeline's help."""
    proc = subprocess.run([sys.executable, "-c", f"import runpy; m = runpy.run_path({EXAMPLE!r}); "
                           "assert callable(m['run']) and m['API_VERSION'] == 1"],
                          cwd=REPO, capture_output=True, text=True, env=env_with_venv())
    assert proc.returncode == 0, proc.stderr


def _parameters(function) -> str:
    """``inspect``'s parameters of ``function`` as ``api.py`` writes them (no self, no annotations)."""
    import inspect

    out = []
    for p in inspect.signature(function).parameters.values():
        if p.name == "self":
            continue
        text = {p.VAR_POSITIONAL: f"*{p.name}", p.VAR_KEYWORD: f"**{p.name}"}.get(p.kind, p.name)
        out.append(text if p.default is p.empty else f"{text}={p.default!r}")
    return ", ".join(out)


def test_the_method_api_of_each_version_is_what_the_code_offers():
    """docs/method-api.md is generated from methods/api.py; every entry must be in the code with exactly
    those parameters (a change that breaks one is a new API_VERSION)."""
    import dataclasses

    from unlearn_da.methods import api, base, counting

    fields = {f.name for f in dataclasses.fields(base.UnlearnContext)}
    for name in api.CONTEXT_ATTRIBUTES:
        assert name in fields or isinstance(getattr(base.UnlearnContext, name, None), property), name
    for name, (params, _) in api.CONTEXT_METHODS.items():
        assert _parameters(getattr(base.UnlearnContext, name)) == params, name
    for name, (params, _) in api.BASE_HELPERS.items():
        assert _parameters(getattr(base, name)) == params, name
    count_fields = {f.name for f in dataclasses.fields(counting.Count)}
    assert set(api.COUNT_ATTRIBUTES) <= count_fields
    for name, (params, _) in api.COUNT_API.items():
        assert _parameters(getattr(counting.Count, name)) == params, name
    assert f"API version **{api.API_VERSION}**" in (REPO / "docs/method-api.md").read_text()


def test_the_audit_plans_the_example_s_models_beside_a_built_in(tmp_path):
    """`audit.methods` takes a user's method: K unlearned models of it and their logits, as for `ft`."""
    from conftest import copy_project

    root = copy_project(tmp_path / "project")
    overlay = root / "own-audit.yaml"
    overlay.write_text("audit: {methods: [ft, forget_penalty]}\n")
    config = ("--configfile", "tests/config/tiny.yaml", "tests/config/tiny-own.yaml", "tests/config/tiny-audit.yaml",
              str(overlay))
    planned = dry_run_jobs(root, *config)
    k = 4  # tests/config/tiny-audit.yaml: audit.train_seeds
    assert planned["audit_unlearn"] == 2 * k, planned
    assert planned["audit_logits"] == 5  # the oracles, the second ensemble, the originals, ft, forget_penalty


def test_snakemake_refuses_a_method_that_cannot_run_before_the_first_job(tmp_path):
    """The Snakefile validates as the tests above do: a dry run stops at the method's key, nothing planned."""
    from conftest import copy_project

    root = copy_project(tmp_path / "project")
    (root / "mine.py").write_text(METHOD_FILE.format(extra="import not_an_installed_package_xyz"))
    (root / "overlay.yaml").write_text("unlearn: {external: {mine: {file: mine.py}}, methods: [ft, mine],\n"
                                       "          mine: {epochs: 1, batch_size: 8, lr: 0.1}}\n")
    proc = snakemake(root, "-n", "--configfile", "overlay.yaml", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "key 'unlearn.external.mine.file': mine.py: imports 'not_an_installed_package_xyz', which is not " \
           "installed" in text, text[-2000:]
    assert "Traceback" not in text and "Job stats" not in text


def test_a_method_without_an_images_declaration_runs_but_a_cost_projection_names_it(tmp_path):
    from unlearn_da.tools.workload import workload_images

    overlay = own(tmp_path, "mine", METHOD_FILE.format(extra=""), methods=["ft", "mine"])
    config = validate(overlay)
    with pytest.raises(ConfigError, match="method 'mine' declares no images\\(count\\)"):
        workload_images(config)
    with_count = METHOD_FILE.format(extra="def images(count):\n    return count.fit('retain')\n")
    assert workload_images(validate(own(tmp_path, "mine", with_count, methods=["ft", "mine"])))["total"] > 0

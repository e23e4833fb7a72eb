"""apply-selection: a search's chosen values go into a profile, and nothing else in the file moves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from unlearn_da.tuning.apply_selection import apply_selection
from unlearn_da.cli import main
from unlearn_da.core.errors import ConfigError

PROFILE = """\
# a profile
unlearn:
  da: {batch_size: 128}   # keep me
  ft: {epochs: 2, batch_size: 128, lr: 0.01}   # epochs, lr: tuned
  muda:                   # block style
    epochs: 3  # tuned
    lr: 0.01
  methods: [ft, muda,
            ft+da]
run_tag: null             # untouched
"""


def _selection(tmp_path: Path, chosen: dict[str, dict]) -> Path:
    path = tmp_path / "selection.json"
    path.write_text(json.dumps({"rule": "r", "chosen": {m: {"values": v} for m, v in chosen.items()}}))
    return path


def test_only_the_chosen_values_change_and_read_back_typed(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    selection = _selection(tmp_path, {
        "ft": {"epochs": 5, "lr": 3e-05},
        "muda": {"epochs": 12, "lr": 0.0123, "basis_source": "epoch"},
        "ft+da": {"da_weight": 0.3, "epochs": 5, "lr": 3e-05},
    })
    changes = apply_selection(selection, profile)
    text = profile.read_text()
    assert text.splitlines()[3] == "  ft: {epochs: 5, batch_size: 128, lr: 3.0e-05}   # epochs, lr: tuned"
    assert "  da: {batch_size: 128, weights: {ft: 0.3}}   # keep me" in text
    assert "    basis_source: epoch  # tuned\n    epochs: 12  # tuned\n    lr: 0.0123\n" in text
    # every other line is byte-identical
    untouched = [line for line in PROFILE.splitlines() if not line.startswith(("  ft:", "  da:", "    epochs", "    lr"))]
    assert all(line in text.splitlines() for line in untouched)
    loaded = yaml.safe_load(text)  # as Snakemake reads a config file (YAML 1.1)
    assert loaded["unlearn"]["ft"]["lr"] == 3e-05 and isinstance(loaded["unlearn"]["ft"]["lr"], float)
    assert loaded["unlearn"]["da"]["weights"] == {"ft": 0.3}
    assert loaded["unlearn"]["muda"] == {"basis_source": "epoch", "epochs": 12, "lr": 0.0123}
    assert len(changes) == 6
    assert apply_selection(selection, profile) == []  # a second run changes nothing
    assert profile.read_text() == text


def test_the_shipped_digits_selection_is_already_in_config_yaml(tmp_path: Path) -> None:
    copy = tmp_path / "config.yaml"
    shutil.copy("config/config.yaml", copy)
    assert apply_selection("config/tuning/digits-selection.json", copy) == []
    assert copy.read_bytes() == Path("config/config.yaml").read_bytes()


def test_refusals_name_the_file_and_leave_it_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(ConfigError, match="bad.json"):
        apply_selection(bad, profile)
    profile.write_text("unlearn:\n  ft: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"unlearn\.ft is not a mapping"):
        apply_selection(_selection(tmp_path, {"ft": {"lr": 0.1}}), profile)
    assert profile.read_text() == "unlearn:\n  ft: [1, 2]\n"
    assert main(["apply-selection", str(bad), str(profile)]) == 2
    assert "bad.json" in capsys.readouterr().err


@pytest.mark.parametrize("chosen, message", [
    ({"ft": {"lr}\n__use_yte__: true\nx: {": 0.1}}, "is not a key of unlearn.ft"),
    ({"ft": {"seeds": [0, 1]}}, "'seeds' is not a key of unlearn.ft"),
    ({"seeds": {"lr": 0.1}}, "chosen method 'seeds' is not a method of the schema"),
    ({"ssd+da": {"da_weight": 1.0}}, "that takes the DA plug-in"),
    ({"muda": {"basis_source": "epoch\n__use_yte__: true"}}, "is not a number, a boolean or a plain name"),
    ({"ft": {"lr": {"nested": 1}}}, "is not a number, a boolean or a plain name"),
    ({"ft": {"lr": -1.0}}, "the selection would make an invalid config"),
], ids=["forged key", "key of another block", "forged method", "ssd+da", "forged string", "mapping", "invalid value"])
def test_a_forged_or_invalid_selection_is_refused_and_the_profile_left_alone(tmp_path: Path, chosen, message) -> None:
    """selection.json is a pipeline output shared through DVC: what it chooses is checked against the schema,
    written through a YAML emitter, and the whole resulting config validated before the file is replaced."""
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    with pytest.raises(ConfigError, match=message) as err:
        apply_selection(_selection(tmp_path, chosen), profile)
    assert ".tmp" not in str(err.value)  # the user's file is named, never the temporary copy
    assert profile.read_text() == PROFILE
    assert not list(tmp_path.glob(".profile.yaml.*"))  # no temporary file left behind

"""Published vs reproduced: the shipped reference tables, matching, the comparison and its table section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from unlearn_da import pipeline as P
from unlearn_da.settings.config import REPO_ROOT
from unlearn_da.core.errors import ConfigError
from unlearn_da.methods import METHOD_MODULES
from unlearn_da.reporting.reference import (
    COLUMNS,
    compare,
    load_reference_file,
    load_references,
    match_references,
    scenario_matches,
    to_markdown,
)
from unlearn_da.reporting.tables import run_aggregate

SHIPPED = REPO_ROOT / P.REFERENCE_DIR
SALUN = "SalUn (Fan et al., ICLR 2024)"
L1 = "ℓ1-sparse (Jia et al., NeurIPS 2023)"


@pytest.fixture(scope="module")
def refs() -> pd.DataFrame:
    return load_references(SHIPPED)


def _row(refs: pd.DataFrame, source: str, scenario: str, method: str) -> pd.Series:
    hit = refs[refs["source"].str.startswith(source) & (refs["scenario"] == scenario)
               & (refs["published_method"] == method)]
    assert len(hit) == 1, (source, scenario, method)
    return hit.iloc[0]


# ------------------------------------------------------------------------------ shipped tables
def test_shipped_tables_load_with_their_sources(refs):
    assert refs.groupby("file").size().to_dict() == {"salun-cifar10.csv": 20, "l1sparse-cifar10.csv": 10}
    assert {s.split(")")[0] + ")" for s in refs["source"]} == {SALUN, L1}
    assert set(refs["dataset"]) == {"cifar10"} and set(refs["arch"]) == {"resnet18"}
    assert P.reference_files(str(SHIPPED)) == sorted(str(SHIPPED / f) for f in set(refs["file"]))


def test_shipped_tables_hold_the_published_values(refs):
    retrain = _row(refs, SALUN, "random10", "Retrain")
    assert (retrain["UA"], retrain["UA_std"], retrain["TA"], retrain["MIA_std"]) == (5.24, 0.69, 94.26, 0.09)
    assert "mean ± std over 10 trials" in retrain["caption"] and retrain["table"] == "Table 1"
    bs = _row(refs, SALUN, "random50", "BS")
    assert (bs["model"], bs["RA"], bs["avg_gap"]) == ("boundary_shrink", 90.19, 8.13) and math.isnan(bs["RA_std"])
    assert _row(refs, SALUN, "random10", "SalUn")["MIA"] == 14.39
    ga = _row(refs, L1, "class", "GA")
    assert (ga["model"], ga["UA"], ga["MIA"], ga["RA"], ga["TA"], ga["avg_gap"]) == ("ga", 93.08, 94.03, 92.60, 86.64, 7.12)
    assert _row(refs, L1, "random10", "FT")["avg_gap"] == 2.74 and _row(refs, L1, "class", "Retrain")["TA"] == 94.83


def test_shipped_tables_keep_every_method_and_std_only_where_published(refs):
    salun10 = refs[refs["source"].str.startswith(SALUN) & (refs["scenario"] == "random10")]
    assert list(salun10["published_method"]) == ["Retrain", "FT", "RL", "GA", "IU", "BE", "BS", "ℓ1-sparse",
                                                  "SalUn", "SalUn-soft"]
    assert salun10[["UA_std", "RA_std", "TA_std", "MIA_std"]].notna().all().all()
    no_std = refs[~(refs["source"].str.startswith(SALUN) & (refs["scenario"] == "random10"))]
    assert len(no_std) == 20 and no_std[["UA_std", "RA_std", "TA_std", "MIA_std"]].isna().all().all()
    ours = set(refs["model"]) - {""}
    assert ours <= set(METHOD_MODULES) | {"retrain"}
    assert set(refs.loc[refs["model"] == "", "published_method"]) == {"IU", "BE", "SalUn-soft", "FF"}


# ------------------------------------------------------------------------------ loading errors
def _csv(tmp_path: Path, name: str = "ref.csv", **changes) -> Path:
    row = {c: "" for c in COLUMNS} | {"source": "X (2024)", "table": "T1", "caption": "c", "dataset": "cifar10",
                                      "arch": "resnet18", "scenario": "random10", "published_method": "GA",
                                      "model": "ga", "UA": "1", "RA": "2", "TA": "3", "MIA": "4", "avg_gap": "5"}
    row |= changes
    frame = pd.DataFrame([row]).drop(columns=[c for c, v in changes.items() if v is None])
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_a_missing_column_names_the_file_and_the_column(tmp_path):
    with pytest.raises(ConfigError, match=r"bad\.csv: missing column\(s\) MIA_std"):
        load_reference_file(_csv(tmp_path, "bad.csv", MIA_std=None))


def test_a_non_number_and_a_bad_scenario_name_file_line_and_column(tmp_path):
    with pytest.raises(ConfigError, match=r"ref\.csv: line 2, column 'UA_std': 'n/a' is not a number"):
        load_reference_file(_csv(tmp_path, UA_std="n/a"))
    with pytest.raises(ConfigError, match=r"ref\.csv: line 2, column 'scenario'"):
        load_reference_file(_csv(tmp_path, scenario="random"))
    with pytest.raises(ConfigError, match=r"ref\.csv: line 2, column 'source' is empty"):
        load_reference_file(_csv(tmp_path, source=""))
    with pytest.raises(ConfigError, match="reference directory not found"):
        load_references(tmp_path / "nowhere")


# ------------------------------------------------------------------------------ matching
def test_class_rows_match_every_class_and_random_rows_only_their_fraction(refs):
    assert scenario_matches("class", "class0") and scenario_matches("class", "class3")
    assert scenario_matches("random10", "random10")
    assert not scenario_matches("random10", "random10.0")  # one spelling per scenario (scenarios.py)
    assert not scenario_matches("random10", "random50") and not scenario_matches("class", "random10")
    assert not scenario_matches("random10", "backdoor10") and not scenario_matches("class", "not-a-scenario")
    for scenario in ("class0", "class3"):
        matched = match_references(refs, "cifar10", "resnet18", scenario)
        assert set(matched["source"].str[:12]) == {L1[:12]} and len(matched) == 5
    random10 = match_references(refs, "cifar10", "resnet18", "random10")
    assert set(random10["scenario"]) == {"random10"} and len(random10) == 15  # SalUn 10 + l1-sparse 5
    assert list(match_references(refs, "cifar10", "resnet18", "random50")["scenario"].unique()) == ["random50"]


def test_other_profiles_and_scenarios_match_nothing(refs):
    assert match_references(refs, "digits", "smallcnn", "class0").empty
    assert match_references(refs, "cifar100", "resnet18", "random10").empty
    assert match_references(refs, "cifar10", "resnet18", "backdoor10").empty
    assert match_references(refs, "cifar10", "resnet18", "random20").empty


# ------------------------------------------------------------------------------ comparison
@pytest.fixture
def toy(tmp_path):
    """One published GA row: UA 10 ± 1, RA 100 ± 0.5, TA 90 without a std; two rows not run here."""
    path = _csv(tmp_path, UA="10", UA_std="1", RA="100", RA_std="0.5", TA="90", MIA="20", avg_gap="3")
    frame = pd.concat([pd.read_csv(path, dtype=str, keep_default_na=False),
                       pd.read_csv(_csv(tmp_path, "b.csv", published_method="IU", model=""), dtype=str,
                                   keep_default_na=False),
                       pd.read_csv(_csv(tmp_path, "c.csv", published_method="SSD", model="ssd"), dtype=str,
                                   keep_default_na=False)])
    frame.to_csv(path, index=False)
    summary = {"ga": {"UA": {"mean": 11.5, "std": 0.5}, "RA": {"mean": 98.0, "std": 0.1},
                      "TA": {"mean": 80.0, "std": 0.0}, "MIA": {"mean": 20.0, "std": 1.0}},
               "retrain": {"UA": {"mean": 9.0, "std": 0.0}}}
    return load_reference_file(path), summary


def test_difference_and_two_std_flag_only_where_a_std_is_published(toy):
    matched, summary = toy
    comp = compare(matched, summary).set_index("metric")
    assert set(comp["model"]) == {"ga"} and len(comp) == 5  # IU has no model, ssd was not run
    assert comp.loc["UA", "diff"] == pytest.approx(1.5) and comp.loc["UA", "outside_2std"] == False  # noqa: E712
    assert comp.loc["RA", "diff"] == pytest.approx(-2.0) and comp.loc["RA", "outside_2std"] == True  # noqa: E712
    assert comp.loc["TA", "diff"] == pytest.approx(-10.0) and pd.isna(comp.loc["TA", "outside_2std"])
    assert math.isnan(comp.loc["avg_gap", "ours_mean"]) and pd.isna(comp.loc["avg_gap", "outside_2std"])


def test_markdown_marks_only_the_value_outside_two_std_and_lists_what_was_not_run(toy):
    matched, summary = toy
    md = to_markdown(compare(matched, summary), matched, summary, "cifar10 / resnet18 — random10")
    assert md.startswith("### Published vs reproduced — cifar10 / resnet18 — random10")
    assert "**X (2024)**, T1: c" in md
    row = next(line for line in md.splitlines() if line.startswith("| ga (GA)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["11.50 ± 0.50", "10.00 ± 1.00", "+1.50"]
    assert cells[4:7] == ["98.00 ± 0.10 †", "100.00 ± 0.50", "-2.00"]
    assert cells[7:10] == ["80.00 ± 0.00", "90.00", "-10.00"] and row.count("†") == 1
    assert "Published, not run here: IU, SSD." in md and "nothing in this project is tuned" in md


def test_a_published_row_s_note_stands_beside_it_in_the_table(tmp_path):
    """The shipped SalUn row predates Unlearn-Saliency PR #33 (masked-out weights kept unchanged), which our
    salun follows: the reader of the comparison sees it beside that row, not only in a docstring."""
    refs = load_references(SHIPPED)
    salun = refs[(refs["model"] == "salun") & (refs["scenario"] == "random10")]
    assert len(salun) == 1 and "PR #33" in salun.iloc[0]["note"]
    assert (refs[refs["model"] != "salun"]["note"] == "").all()
    summary = {"retrain": {"UA": {"mean": 5, "std": 0}}, "salun": {"UA": {"mean": 4, "std": 0}}}
    matched = match_references(refs, "cifar10", "resnet18", "random10")
    md = to_markdown(compare(matched, summary), matched, summary, "cifar10 / resnet18 — random10")
    assert "| salun (SalUn) ‡ |" in md and "| retrain (Retrain) |" in md
    note = next(line for line in md.splitlines() if line.startswith("‡ SalUn:"))
    assert "PR #33" in note and md.count("‡") == 2


# ------------------------------------------------------------------------------ aggregation
def _metrics(tmp_path: Path, scenario: str) -> list[str]:
    values = {"retrain": [(100, 100, 94, 100), (100, 99.9, 94.5, 100)],
              "ga": [(90, 93, 87, 95), (92, 92, 86, 93)],
              "muda": [(99, 99, 93, 99), (98, 99, 93, 99)]}
    paths = []
    for model, seeds in values.items():
        for seed, (ua, ra, ta, mia) in enumerate(seeds):
            path = tmp_path / f"{model}-{seed}.json"
            path.write_text(json.dumps({"model": model, "seed": seed, "scenario": scenario,
                                        "metrics": {"UA": ua, "RA": ra, "TA": ta, "MIA": mia, "seconds": 10}}))
            paths.append(str(path))
    return paths


def test_aggregate_adds_the_published_section_for_a_matching_profile(tmp_path):
    out = tmp_path / "out"
    run_aggregate(_metrics(tmp_path, "class0"), ["retrain", "ga", "muda"], "class0", "cifar10 / resnet18",
                  str(out), dataset="cifar10", arch="resnet18", reference_dir=str(SHIPPED))
    md = (out / "table.md").read_text()
    section = md.split("### Published vs reproduced — cifar10 / resnet18 — class0", 1)[1]
    assert f"**{L1}, project page" in section and SALUN not in section
    assert "| ga (GA) | 91.00 ± 1.41 | 93.08 | -2.08 |" in section
    assert "Published, not run here: FT, FF, IU." in section
    published = pd.read_csv(out / "published.csv")
    assert set(published["model"]) == {"retrain", "ga"} and len(published) == 10
    ga_gap = published[(published["model"] == "ga") & (published["metric"] == "avg_gap")].iloc[0]
    assert ga_gap["published"] == 7.12 and ga_gap["ours_mean"] == pytest.approx(7.55)
    assert published["outside_2std"].isna().all()  # the l1-sparse table publishes no std


def test_aggregate_leaves_a_profile_without_reference_unchanged(tmp_path):
    out = tmp_path / "out"
    inputs = _metrics(tmp_path, "class0")
    run_aggregate(inputs, ["retrain", "ga", "muda"], "class0", "x", str(out), dataset="cifar10", arch="resnet18",
                  reference_dir=str(SHIPPED))
    assert (out / "published.csv").exists()
    run_aggregate(inputs, ["retrain", "ga", "muda"], "class0", "x", str(out), dataset="digits", arch="smallcnn",
                  reference_dir=str(SHIPPED))
    digits = (out / "table.md").read_text()
    assert "Published vs reproduced" not in digits and not (out / "published.csv").exists()
    run_aggregate(inputs, ["retrain", "ga", "muda"], "class0", "x", str(tmp_path / "plain"))
    assert (tmp_path / "plain" / "table.md").read_text() == digits

"""Published numbers of peer papers beside ours: the "Published vs reproduced" part of the tables.

``config/reference/*.csv`` holds sourced rows of other papers' tables (one row per published method
and setting, each with its source, table and caption). A run whose (dataset, arch, scenario) matches
a row gets, per method we ran and per metric, our mean ± std over seeds, the published value, the
difference and, only where the source publishes a std, whether ours lies outside the published
mean ± 2 std. RTE and time are not compared: they depend on the hardware. Nothing reads these
numbers except the tables; no code is tuned towards them.

Published rows whose method we do not implement (empty ``model``) or did not run are not compared;
the Markdown lists them per source as "not run here".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import ConfigError
from ..core.scenarios import parse_scenario

CLASSWISE = "class"  # a reference row of this scenario matches every class<C> scenario
COMPARED = ("UA", "RA", "TA", "MIA", "avg_gap")  # not RTE / time: they depend on the hardware
HEADERS = {"UA": "UA", "RA": "RA", "TA": "TA", "MIA": "MIA-Eff.", "avg_gap": "Avg. Gap"}
STD_COLUMNS = ("UA_std", "RA_std", "TA_std", "MIA_std")
TEXT_COLUMNS = ("source", "table", "caption", "dataset", "arch", "scenario", "published_method", "model")
NUMERIC_COLUMNS = COMPARED + STD_COLUMNS + ("RTE",)
COLUMNS = TEXT_COLUMNS + NUMERIC_COLUMNS + ("RTE_unit",)
OPTIONAL_COLUMNS = ("note",)  # what a reader must know beside a published row (e.g. code it predates)
REQUIRED_TEXT = ("source", "table", "dataset", "arch", "scenario", "published_method")
BLOCK_KEYS = ["source", "table", "caption", "scenario"]
MARK = "†"
NOTE_MARK = "‡"

LEGEND = (f"Ours: mean ± std over seeds; published: as printed (± std where the source gives one); "
          f"diff = ours − published; {MARK} ours outside the published mean ± 2 std (only where a std is "
          "published). RTE and time are not compared (they depend on the hardware). Published values "
          "come from other data splits, training recipes and hardware, so differences are not "
          "comparable as such; nothing in this project is tuned towards them.")


# ------------------------------------------------------------------------------ loading
def _numeric(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column].str.strip().replace("", np.nan), errors="coerce")
    bad = values.isna() & (frame[column].str.strip() != "")
    if bad.any():
        line = int(bad.idxmax()) + 2  # header is line 1
        raise ConfigError(f"{path}: line {line}, column '{column}': "
                          f"'{frame.at[bad.idxmax(), column]}' is not a number")
    if column.endswith("_std") and (values < 0).any():
        line = int((values < 0).idxmax()) + 2
        raise ConfigError(f"{path}: line {line}, column '{column}': a std cannot be negative")
    return values


def _check_scenario(value: str, path: Path, line: int) -> None:
    if value == CLASSWISE:
        return
    try:
        parse_scenario(value)
    except ConfigError as exc:
        raise ConfigError(f"{path}: line {line}, column 'scenario': {exc} (or '{CLASSWISE}' for "
                          "every class-wise scenario)") from None


def load_reference_file(path: str | Path) -> pd.DataFrame:
    """One reference CSV, checked: every column present, text fields filled, numbers numeric."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; "
                          f"a reference table needs {', '.join(COLUMNS)}")
    for column in OPTIONAL_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame = frame[list(COLUMNS + OPTIONAL_COLUMNS)].copy()
    for column in TEXT_COLUMNS + ("RTE_unit",) + OPTIONAL_COLUMNS:
        frame[column] = frame[column].str.strip()
    for column in REQUIRED_TEXT:
        empty = frame[column] == ""
        if empty.any():
            raise ConfigError(f"{path}: line {int(empty.idxmax()) + 2}, column '{column}' is empty")
    for index, value in frame["scenario"].items():
        _check_scenario(value, path, int(index) + 2)
    for column in NUMERIC_COLUMNS:
        frame[column] = _numeric(frame, column, path)
    frame["file"] = path.name
    return frame


def load_references(ref_dir: str | Path) -> pd.DataFrame:
    """Every ``*.csv`` of ``ref_dir`` (sorted by name), rows in file order."""
    ref_dir = Path(ref_dir)
    if not ref_dir.is_dir():
        raise ConfigError(f"{ref_dir}: reference directory not found (it holds the published tables "
                          "compared in table.md, e.g. config/reference)")
    frames = [load_reference_file(p) for p in sorted(ref_dir.glob("*.csv"))]
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, *OPTIONAL_COLUMNS, "file"])
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------ matching
def scenario_matches(reference: str, scenario: str) -> bool:
    """``class`` matches every ``class<C>``; any other reference scenario only the same scenario
    (``random10`` matches ``random10``, not ``random50``; ``random10.0`` is no scenario name)."""
    try:
        kind, value = parse_scenario(scenario)
    except ConfigError:
        return False
    if reference == CLASSWISE:
        return kind == "class"
    return parse_scenario(reference) == (kind, value)


def match_references(refs: pd.DataFrame, dataset: str, arch: str, scenario: str) -> pd.DataFrame:
    """The reference rows of this run's (dataset, arch, scenario), in file order."""
    if refs.empty:
        return refs
    keep = ((refs["dataset"] == dataset) & (refs["arch"] == arch)
            & refs["scenario"].map(lambda s: scenario_matches(s, scenario)))
    return refs[keep].reset_index(drop=True)


# ------------------------------------------------------------------------------ comparison
def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _ours(summary: Mapping[str, Mapping[str, Mapping[str, float]]], model: str,
          metric: str) -> tuple[float, float]:
    stats = summary.get(model, {}).get(metric)
    if not stats:
        return math.nan, math.nan
    return _number(stats.get("mean")), _number(stats.get("std"))


def outside_two_std(ours: float, published: float, std: float) -> bool | None:
    """Whether ours lies outside published ± 2 std; None where there is no std (or no value)."""
    if any(math.isnan(v) for v in (ours, published, std)):
        return None
    return abs(ours - published) > 2 * std


def is_run(model: str, summary: Mapping[str, Any]) -> bool:
    """A published method is compared only where we ran it under its ``model`` name
    (``ft+da`` is not FT; an empty ``model`` is a method we do not implement)."""
    return bool(model) and model in summary


def compare(matched: pd.DataFrame, summary: Mapping[str, Mapping[str, Mapping[str, float]]]) -> pd.DataFrame:
    """Long table, one row per (source, model, metric) for the matched rows whose model we ran."""
    rows = []
    for _, ref in matched.iterrows():
        if not is_run(ref["model"], summary):
            continue
        for metric in COMPARED:
            ours, ours_std = _ours(summary, ref["model"], metric)
            published = float(ref[metric])
            std = float(ref[f"{metric}_std"]) if f"{metric}_std" in ref.index else math.nan
            rows.append({**{k: ref[k] for k in BLOCK_KEYS}, "published_method": ref["published_method"],
                         "model": ref["model"], "metric": metric, "ours_mean": ours, "ours_std": ours_std,
                         "published": published, "published_std": std, "diff": ours - published,
                         "outside_2std": outside_two_std(ours, published, std)})
    columns = [*BLOCK_KEYS, "published_method", "model", "metric", "ours_mean", "ours_std", "published",
               "published_std", "diff", "outside_2std"]
    out = pd.DataFrame(rows, columns=columns)
    out["outside_2std"] = out["outside_2std"].astype("boolean")
    return out


# ------------------------------------------------------------------------------ Markdown
def _fmt(mean: float, std: float = math.nan) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _signed(diff: float) -> str:
    if math.isnan(diff):
        return "–"
    text = f"{diff:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def _flagged(value: Any) -> bool:
    return not pd.isna(value) and bool(value)


def _block(block: pd.DataFrame, refs: pd.DataFrame, summary: Mapping[str, Any]) -> list[str]:
    first = block.iloc[0] if len(block) else refs.iloc[0]
    lines = [f"**{first['source']}**, {first['table']}: {first['caption']}", ""]
    header = ["Model (published)"] + [f"{HEADERS[m]} {part}" for m in COMPARED for part in
                                      ("ours", "published", "diff")]
    if len(block):
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        notes = {(m, n): note for m, n, note in zip(refs["model"], refs["published_method"], refs["note"],
                                                      strict=True) if note}
        for (model, name), rows in block.groupby(["model", "published_method"], sort=False):
            cells = [f"{model} ({name})" + (f" {NOTE_MARK}" if (model, name) in notes else "")]
            for _, r in rows.set_index("metric").loc[list(COMPARED)].iterrows():
                mark = f" {MARK}" if _flagged(r["outside_2std"]) else ""
                diff = _signed(r["diff"])
                cells += [_fmt(r["ours_mean"], r["ours_std"]) + mark,
                          _fmt(r["published"], r["published_std"]), diff]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        shown = set(zip(block["model"], block["published_method"], strict=True))
        lines += [f"{NOTE_MARK} {name}: {note}" for (model, name), note in notes.items() if (model, name) in shown]
        lines += [""] if any(key in shown for key in notes) else []
    skipped = [n for n, m in zip(refs["published_method"], refs["model"], strict=True) if not is_run(m, summary)]
    if skipped:
        lines += [f"Published, not run here: {', '.join(skipped)}.", ""]
    return lines


def to_markdown(comparison: pd.DataFrame, matched: pd.DataFrame, summary: Mapping[str, Any],
                title: str) -> str:
    """The "Published vs reproduced" section: one block per source (its source line, then the
    table), the published methods not run here, and the legend."""
    lines = [f"### Published vs reproduced — {title}", ""]
    for key, refs in matched.groupby(BLOCK_KEYS, sort=False):
        mask = (comparison[BLOCK_KEYS] == pd.Series(key, index=BLOCK_KEYS)).all(axis=1)
        lines += _block(comparison[mask], refs, summary)
    lines.append(LEGEND)
    return "\n".join(lines) + "\n"

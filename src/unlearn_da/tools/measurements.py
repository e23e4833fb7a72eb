"""The project's measured numbers, in one shipped file: ``measurements/measurements.json``.

Every wall time, test count and machine that README.md, config/README.md or a page of docs/ states is
an entry of this file, and ``make readme-tables`` renders it there (``tools/readme_tables.py``); no
page types one. An entry is keyed by what was measured (the command, e.g. ``make reproduce`` or
``make reproduce PROFILE=config/quick.yaml``) and records the seconds, the machine (CPU model and
cores), the date, the commit and, where the command says them, the jobs Snakemake ran and the
tests pytest passed. ``python -m unlearn_da measure -- <command>`` runs a command, records it and
renders the project's pages again (the commands that measure something else, ``dvc-experiments``
and ``make bench``, update their own entries); an entry is only written when the command succeeded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.artifacts import write_text

DEFAULT_FILE = Path("measurements") / "measurements.json"
FORMAT = 1

_STEPS = re.compile(r"(\d+) of (\d+) steps \(100%\) done")
_PYTEST = re.compile(r"(?P<n>\d+) (?P<kind>passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b")


def machine() -> str:
    """``<CPU model>, <n> cores``: what a measured time is a time on."""
    from ..core.kernels import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"


def commit(root: Path | str = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def read(path: Path | str = DEFAULT_FILE) -> dict[str, Any]:
    """The file's entries (an empty file where there is none yet)."""
    p = Path(path)
    if not p.exists():
        return {"format": FORMAT, "entries": {}}
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        raise ValueError(f"{p}: not a measurements file of format {FORMAT} ({{'format': 1, 'entries': {{...}}}})")
    return data


def update(key: str, entry: dict[str, Any], path: Path | str = DEFAULT_FILE) -> dict[str, Any]:
    """Set one entry (written aside, then moved: a crash leaves the old file whole)."""
    data = read(path)
    data["entries"][key] = entry
    data["entries"] = dict(sorted(data["entries"].items()))
    write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return data


def counts_from_output(text: str) -> dict[str, int]:
    """What a command's output says it did: ``jobs`` (Snakemake's last "N of N steps (100%) done",
    summed over its runs) and pytest's summary counts (``passed``, ``skipped``, ...)."""
    out: dict[str, int] = {}
    runs = _STEPS.findall(text)
    if runs:
        totals: list[int] = []
        for done, total in runs:  # a run's lines count up to its total; a new run starts again at 1
            if not totals or int(done) == 1 or int(total) != totals[-1]:
                totals.append(int(total))
        out["jobs"] = sum(totals)
    summary = [line for line in text.splitlines() if re.search(r"\b(passed|failed)\b.* in [\d.]+s", line)]
    for line in summary[-1:]:
        for m in _PYTEST.finditer(line):
            kind = "errors" if m["kind"].startswith("error") else m["kind"]
            out[kind] = out.get(kind, 0) + int(m["n"])
    return out


def measure(command: list[str], key: str | None = None, path: Path | str = DEFAULT_FILE,
            note: str | None = None) -> int:
    """Run ``command`` (its output passes through), then record its wall time, machine, date, commit
    and counts under ``key`` (default: the command line). Returns its exit code; a failed command
    records nothing."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    seen: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        seen.append(line)
    code = proc.wait()
    seconds = time.perf_counter() - t0
    if code != 0:
        print(f"measure: `{' '.join(command)}` exited {code}; nothing recorded", file=sys.stderr)
        return code
    entry = {"command": " ".join(command), "seconds": round(seconds, 1), "machine": machine(),
             "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": commit(),
             **counts_from_output("".join(seen))}
    if note:
        entry["note"] = note
    update(key or entry["command"], entry, path)
    print(f"measure: {entry['command']}: {duration(seconds)} on {entry['machine']} -> {path}", file=sys.stderr)
    render_pages(path)
    return 0


def render_pages(path: Path | str) -> None:
    """Rewrite the generated blocks of the project that holds the measurements file ``path``
    (``measurements/measurements.json`` under its root), so that its pages state what the file now
    says; a file elsewhere renders nothing."""
    from .readme_tables import run_readme_tables

    root = Path(path).resolve().parent.parent
    if Path(path).resolve() != (root / DEFAULT_FILE).resolve() or not (root / "README.md").exists():
        return
    code, message = run_readme_tables(root)
    print(f"measure: {message}", file=sys.stderr)


def duration(seconds: float) -> str:
    """``9 min 31 s``, ``2 h 05 min``, ``45 s``: how the rendered pages write a measured time."""
    whole = int(round(float(seconds)))
    if whole >= 3600:
        minutes = int(round(whole / 60))
        return f"{minutes // 60} h {minutes % 60:02d} min"
    if whole >= 60:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole} s"

"""Snakemake's own share of a run: the CPU its process used (no job's), next to the jobs' benchmarks.

The Snakefile's ``onsuccess`` handler calls :func:`record` in Snakemake's process after a run that ran
jobs; ``make bench`` reports the file beside the per-rule breakdown.
"""

from __future__ import annotations

import glob
import json
import resource
from pathlib import Path

from ..core import startup
from ..core.artifacts import write_json

FILE = "benchmarks/snakemake.json"


def record(run: str, root: Path = Path(".")) -> Path:
    """Write this process's CPU seconds (user + system, its threads, not its children) and its age."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = root / "results" / run / FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "wall_s": round(startup.process_age(), 2)})
    return out


def usage_lines(pattern: str = f"results/*/{FILE}") -> list[str]:
    """One line per run: Snakemake's CPU against the wall time of its last run that ran jobs."""
    lines = []
    for path in sorted(glob.glob(pattern)):
        try:
            data = json.loads(Path(path).read_text())
            cpu, wall = float(data["cpu_s"]), float(data["wall_s"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        share = f"{100 * cpu / wall:.1f} % of its wall time" if wall > 0 else "no wall time"
        lines.append(f"- {Path(path).parts[1]}: Snakemake's own process used {cpu:.0f} s of CPU in a {wall:.0f} s "
                     f"run ({share}; one core's worth)")
    return lines

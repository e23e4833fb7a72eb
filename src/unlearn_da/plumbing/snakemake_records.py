"""Snakemake's records of a run's jobs, carried in the run's own folder, so that a copy of the run has them.

Snakemake decides what to rerun from file times and from its records in ``.snakemake/metadata``: per
output, the rule's params, code and the checksums of the inputs it was made from. An input that is
newer than an output but has the recorded checksum reruns nothing (the workflow profiles record the
checksums of files up to 1 GB). ``.snakemake/`` is neither in Git nor in DVC, so a workspace that DVC
makes for an experiment (``dvc exp run --temp``, ``--queue``), a fresh clone after ``dvc pull`` or a
CI checkout lacks the records; seeing only new mtimes, Snakemake reruns every job. ``make pipeline``,
the command of every DVC stage, therefore restores the records it lacks from
``results/<run>/.snakemake-records/`` before Snakemake and saves the run's records there after it.
A file whose content changed still reruns what reads it: its checksum differs from the record.

A record's file name is Snakemake's: the output's path, URL-safe base64, cut into 254-character folder
names prefixed ``@`` when long (``snakemake/persistence/file.py``, format version 6).
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
from pathlib import Path

RECORDS = ".snakemake-records"
METADATA = Path(".snakemake") / "metadata"


def run_prefixes(run: str) -> tuple[str, ...]:
    """The output paths of a run: its results and its prepared data."""
    return (f"results/{run}/", f"data/prepared/{run}/")


def record_path(rel: Path) -> str | None:
    """The output path a record file stands for, or None for a file that is not a record."""
    parts = list(rel.parts)
    if not parts or any(not p.startswith("@") for p in parts[:-1]):
        return None
    encoded = "".join(p[1:] for p in parts[:-1]) + parts[-1]
    try:
        return base64.urlsafe_b64decode(encoded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _records(folder: Path, prefixes: tuple[str, ...]) -> dict[Path, Path]:
    """relative record path -> file, for the records under ``folder`` of outputs under ``prefixes``."""
    found: dict[Path, Path] = {}
    if not folder.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(dirpath, name)
            rel = path.relative_to(folder)
            output = record_path(rel)
            if output is not None and output.startswith(prefixes) and path.is_file() and not path.is_symlink():
                found[rel] = path
    return found


def _copy(src: Path, dest: Path) -> None:
    """Copy aside, then move into place: a reader never sees half a record."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name[:200]}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def save(run: str, root: Path = Path(".")) -> int:
    """Copy the run's records from ``.snakemake/metadata`` into ``results/<run>/.snakemake-records``; a
    carried record whose output Snakemake no longer records goes. Unchanged files are left as they are
    (DVC hashes them again only when they change). Returns the records written or removed."""
    carried_dir = root / "results" / run / RECORDS
    current = _records(root / METADATA, run_prefixes(run))
    carried = _records(carried_dir, run_prefixes(run))
    changed = 0
    for rel, src in current.items():
        dest = carried_dir / rel
        if rel in carried and dest.read_bytes() == src.read_bytes():
            continue
        _copy(src, dest)
        changed += 1
    for rel, path in carried.items():
        if rel not in current:
            path.unlink()
            changed += 1
    return changed


def restore(run: str, root: Path = Path(".")) -> int:
    """Copy into ``.snakemake/metadata`` each carried record of the run that it lacks (a record it has is
    this workspace's own and stays). Returns the records restored."""
    metadata = root / METADATA
    restored = 0
    for rel, src in _records(root / "results" / run / RECORDS, run_prefixes(run)).items():
        dest = metadata / rel
        if dest.exists():
            continue
        _copy(src, dest)
        restored += 1
    return restored

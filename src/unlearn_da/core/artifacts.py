"""Atomic writes, checksums and provenance sidecars for every pipeline file.

Every output is written under a temporary name in its own directory and renamed
when complete, so a crash never leaves a half-written file under the final name.
Every artifact gets a sidecar ``<file>.meta.json`` with its SHA-256 and the
values it depends on; readers verify the checksum before trusting the file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from . import device_pool

from . import kernels

from . import startup
from .errors import ArtifactError, MissingField

SIDECAR_SUFFIX = ".meta.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file is created like a plain ``open`` would (0666 minus the umask),
    not private as ``tempfile.mkstemp`` makes it, so shared results and DVC caches
    stay readable by the group.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*.tmp"):  # left by a job killed mid-write
        stale.unlink(missing_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class FileRecord(dict):
    """A JSON object read from a pipeline file: a missing field raises :class:`MissingField`
    naming the file, the field and the rule that makes the file, never a bare ``KeyError``."""

    def __init__(self, pairs: Any = (), source: str = "", hint: str = "") -> None:
        super().__init__(pairs)
        self.source, self.hint = source, hint

    def __missing__(self, key: Any) -> Any:
        raise MissingField(f"{self.source}: field {key!r} is missing{self.hint}; the file is incomplete or was "
                           "edited: delete it and rerun the pipeline")

    def __reduce__(self) -> Any:  # pickles (and deep-copies) as a plain dict
        return (dict, (dict(self),))


#: bytes a JSON file the pipeline reads may hold (the largest it writes, a tuning selection, is under 1 MB)
MAX_JSON_BYTES = 64 << 20


def regular_file(path: str | os.PathLike, made_by: str | None = None, max_bytes: int | None = None) -> Path:
    """``path`` if it is a regular file (through symlinks) of at most ``max_bytes``; else an ArtifactError
    naming it. Checked before any read: a FIFO blocks a reader forever, a link to /dev/zero feeds it
    until memory runs out."""
    p = Path(path)
    hint = f" (made by rule '{made_by}')" if made_by else ""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ArtifactError(f"{p}: file not found{hint}") from None
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot be read ({exc.strerror}){hint}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a special file")
        raise ArtifactError(f"{p}: {kind}, not a regular file{hint}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ArtifactError(f"{p}: {st.st_size:,} bytes, more than the {max_bytes:,} such a file may hold{hint}")
    return p


def read_json(path: str | os.PathLike, made_by: str | None = None) -> Any:
    """Read a JSON file, naming the file and the rule that makes it on failure (a missing field too)."""
    hint = f" (made by rule '{made_by}')" if made_by else ""
    p = regular_file(path, made_by, MAX_JSON_BYTES)
    try:
        return json.loads(p.read_text(encoding="utf-8"),
                          object_pairs_hook=lambda pairs: FileRecord(pairs, str(p), hint))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{p}: not valid JSON ({exc}){hint}; delete it and rerun the pipeline"
        ) from exc
    except RecursionError:
        raise ArtifactError(f"{p}: nested too deeply to be a file the pipeline writes{hint}; delete it and "
                            "rerun the pipeline") from None


def _numpy_read_errors() -> tuple[type[BaseException], ...]:
    """What numpy raises on a damaged ``.npy``/``.npz``: besides the usual, a header it cannot parse
    raises SyntaxError or tokenize's TokenError (numpy reads the header with ``ast.literal_eval``)."""
    import tokenize
    import zipfile

    return (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, RecursionError, SyntaxError,
            tokenize.TokenError, MemoryError)


def load_npy(path: str | os.PathLike, made_by: str, what: str = "file") -> Any:
    """One ``.npy`` array (no pickles), or one ArtifactError naming the file."""
    import numpy as np

    p = regular_file(path, made_by)
    try:
        return np.load(p, allow_pickle=False)
    except _numpy_read_errors() as exc:
        raise ArtifactError(f"{p}: unreadable {what} ({str(exc)[:200] or 'empty file'}) "
                            f"(made by rule '{made_by}')") from None


def load_npz(path: str | os.PathLike, made_by: str, what: str = "file") -> dict[str, Any]:
    """Every array of an ``.npz`` (no pickles, numpy's bound on header sizes), or one ArtifactError
    naming the file: truncated, not a zip, a header too large, a member that is no array."""
    import numpy as np

    p = regular_file(path, made_by)
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except _numpy_read_errors() as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__  # one line: numpy's own text has newlines
        raise ArtifactError(f"{p}: unreadable {what} ({reason}) "
                            f"(made by rule '{made_by}'); delete it and rerun the pipeline") from None


def save_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Write arrays as an uncompressed ``.npz`` atomically, byte-for-byte reproducible.

    ``numpy.savez`` stamps each member with the current time, so identical arrays
    would give different files (and checksums); here every member gets a fixed date.
    """
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read once per process per file version: a job checks its data set against
    its sidecar and then records it, and a CIFAR data set is 184 MB. The version is the file's
    device, inode, size and modification time (ns), so a rewritten or replaced file is read again."""
    st = os.stat(regular_file(path))
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


_DIGESTS: dict[tuple, str] = {}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the working tree the code runs from, or 'unknown' outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def environment_record() -> dict[str, Any]:
    """Library versions and host facts that can change numbers; stored in every sidecar."""
    record: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        record["torch"] = torch.__version__
        record["torch_threads"] = torch.get_num_threads()
        record["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            record["gpu"] = gpu_record(torch)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        record["numpy"] = numpy.__version__
    record["kernels"] = kernels.record()
    slot = device_pool.held_record()
    if slot is not None:  # which GPU (and slot of it) the job held, and how many jobs shared it
        record["device_slot"] = slot
    return record


@functools.lru_cache(maxsize=1)
def nvidia_driver() -> str | None:
    """The NVIDIA driver version (one per machine), or None where nvidia-smi cannot tell."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0].strip() if lines else None


def gpu_record(torch: Any) -> dict[str, Any]:
    """What decides a GPU run's bits besides the code: the GPU model, driver, CUDA, cuDNN and TF32."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"name": props.name, "capability": f"{props.major}.{props.minor}", "driver": nvidia_driver(),
            "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}


def write_sidecar(artifact: str | os.PathLike, made_by: str, meta: dict[str, Any],
                  startup_s: bool = True) -> dict[str, Any]:
    """Write ``<artifact>.meta.json`` with the artifact's checksum and provenance; ``startup_s``: record
    the job's start-up (off for a job's second artifact, which ``make bench`` would count twice)."""
    record = {
        "artifact": Path(artifact).name,
        "sha256": sha256_file(artifact),
        "made_by": made_by,
        "created_unix": round(time.time(), 3),
        "environment": environment_record(),
        **meta,
    }
    if startup_s and startup.seconds() is not None:  # process start -> the job's first unit of work (make bench)
        record["startup_s"] = round(float(startup.seconds()), 3)
    tail = startup.tail_seconds()
    if tail is not None:  # the job's work's end -> this file written (save, reload, features, checksum)
        record["tail_s"] = round(tail, 3)
    write_json(sidecar_path(artifact), record)
    return record


def verify_artifact(path: str | os.PathLike, made_by: str) -> dict[str, Any]:
    """Check that ``path`` exists and matches the checksum in its sidecar; return the sidecar."""
    p = regular_file(path, made_by)
    meta_file = sidecar_path(p)
    if not meta_file.exists():
        raise ArtifactError(
            f"{p}: sidecar {meta_file.name} is missing, so the file cannot be verified "
            f"(made by rule '{made_by}'); delete it and rerun the pipeline"
        )
    meta = read_json(meta_file, made_by)
    expected = meta.get("sha256") if isinstance(meta, dict) else None
    actual = sha256_file(p)
    if expected != actual:
        raise ArtifactError(
            f"{p}: SHA-256 {actual[:12]}… does not match its sidecar ({str(expected)[:12]}…): "
            f"the file is truncated, corrupted or was replaced (made by rule '{made_by}'); "
            "delete it and rerun the pipeline"
        )
    return meta

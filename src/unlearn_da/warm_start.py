"""Warm start: a job command runs in a fork of a process that has already imported torch.

Every pipeline job is a new ``python -m unlearn_da <command>`` process, and on a small CPU job
importing torch, numpy and scikit-learn costs more than the work (about 3 s of a digits unlearning
job's 6). With warm start the job's process stays what Snakemake starts, waits on and kills, but
it only connects to a per-user *server* that has imported those libraries and the package once,
hands it its arguments, working directory, environment and its stdin/stdout/stderr, and the server
forks a child that runs the command exactly as the process would have. The client forwards
SIGINT/SIGTERM/SIGHUP to the child and exits with the child's status; if the client is killed
(SIGKILL), the server kills the child. A job still writes each file aside and moves it into place,
so a killed job leaves nothing half-written either way.

What keeps a fork equal to a fresh process:

- **One server per environment.** The server's key hashes the interpreter, ``sys.path``, the whole
  environment (libraries read variables such as ``ATEN_CPU_CAPABILITY`` or ``OMP_NUM_THREADS``
  once, when they load), the job's CPU-kernel mode and every file of the package (path, size,
  mtime): an edited module or another setting starts another server, never a stale one.
- **No threads and no accelerator before the fork.** The server imports but computes nothing: no
  OpenMP or BLAS pool exists yet, and CUDA is never initialised (jobs that may use a GPU run cold:
  ``device`` other than ``cpu`` while a GPU device node exists). The server's loop is single-threaded.
- **Seeds are the job's.** Every job seeds torch, numpy and Python's ``random`` itself.

Warm start is used on Linux for the commands of the pipeline's rules; never under SLURM (each job
is its own allocation there), with ``UNLEARN_DA_WARM_START=0`` or the kill test's hook set. Anything that fails before the request is sent falls back to
running the command in this process. The server exits after ``IDLE_SECONDS`` without a job.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

ENV_SWITCH = "UNLEARN_DA_WARM_START"
#: the commands of the pipeline's rules (workflow/rules/*.smk) that may run warm
WARM_COMMANDS = frozenset({"train", "unlearn", "metrics", "audit-logits", "audit", "split", "aggregate",
                           "select", "plan-round", "plan-da", "choose-da-energy"})
#: libraries the server imports before it forks, the costly part of a job's start-up: 3-5 s of torch, the
#: torch._dynamo that every optimizer imports, numpy, SciPy and scikit-learn, against 0.1 s for the package's
#: own modules, which each job imports itself (so it runs today's code and UNLEARN_DA_TRACE lists them)
PRELOAD = ("torch", "torch.nn.functional", "torch.optim", "torch._dynamo", "numpy", "scipy.linalg", "scipy.optimize",
           "scipy.stats", "sklearn.cluster", "sklearn.decomposition", "sklearn.linear_model", "sklearn.metrics",
           "sklearn.model_selection", "sklearn.pipeline", "sklearn.preprocessing", "sklearn.svm")
#: seconds a server waits for the next job before it exits
IDLE_SECONDS = 30.0
#: seconds a client waits for a server it started to be ready
START_TIMEOUT = 120.0
# environment variables that differ between a job's shell and the next without meaning anything
_VOLATILE_ENV = frozenset({"_", "OLDPWD", "PWD", "SHLVL"})
_HEADER = struct.Struct("!I")
_PACKAGE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- client side

def wanted(argv: list[str], env: dict[str, str] | None = None) -> bool:
    """Whether ``python -m unlearn_da <argv>`` should run warm (see the module docstring)."""
    env = os.environ if env is None else env
    if not argv or argv[0] not in WARM_COMMANDS:
        return False
    if env.get(ENV_SWITCH, "1").strip().lower() in ("0", "off", "no", "false"):
        return False
    if sys.platform != "linux" or "SLURM_JOB_ID" in env:
        return False
    if env.get("UNLEARN_DA_TEST_KILL_AFTER_EPOCH"):  # the test's power cut kills the job's process group,
        return False                                 # Snakemake included: the job must be in it
    if not hasattr(socket, "send_fds") or not hasattr(os, "fork"):
        return False
    return _cpu_only(_job_params(argv), env)


def _job_params(argv: list[str]) -> dict[str, Any]:
    """The job's ``--params`` JSON (empty if absent or not JSON: the command itself will say so)."""
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "--params":
            try:
                params = json.loads(value)
            except ValueError:
                return {}
            return params if isinstance(params, dict) else {}
    return {}


def _cpu_only(params: dict[str, Any], env: dict[str, str]) -> bool:
    """True where the job cannot touch a GPU: a fork must never follow CUDA's initialisation."""
    device = str(params.get("device", "cpu"))
    if device == "cpu":
        return True
    if device != "auto":
        return False
    hidden = env.get("CUDA_VISIBLE_DEVICES") is not None and env["CUDA_VISIBLE_DEVICES"].strip() in ("", "-1")
    return hidden or not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/kfd"))


def kernel_mode(argv: list[str]) -> str:
    """The CPU-kernel mode the job will run with: its ``cpu_kernels`` param, else the environment's."""
    from .core import kernels

    mode = _job_params(argv).get("cpu_kernels")
    return str(mode) if mode in kernels.MODES else kernels.mode_from_environment()


def package_signature() -> str:
    """Path, size and mtime of every file of the package: an edit gives another server."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        h.update(f"{path.relative_to(_PACKAGE)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def server_key(mode: str, env: dict[str, str]) -> str:
    stable = {k: v for k, v in env.items() if k not in _VOLATILE_ENV}
    blob = json.dumps({"python": sys.executable, "version": sys.version, "path": sys.path, "env": stable,
                       "mode": mode, "package": package_signature()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def socket_dir(env: dict[str, str] | None = None) -> Path | None:
    """A directory only this user can enter (made if absent), or None if no safe one exists."""
    env = os.environ if env is None else env
    for base in (env.get("XDG_RUNTIME_DIR"), env.get("TMPDIR"), "/tmp"):
        if not base or not os.path.isdir(base):
            continue
        path = Path(base) / f"unlearn-da-warm-{os.getuid()}"
        if len(str(path)) > 70:  # a socket's path is at most 107 bytes
            continue
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            st = path.lstat()
        except OSError:
            continue
        import stat

        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077:
            return path
    return None


def _send(conn: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    payload = _HEADER.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(conn, [payload], fds)
        conn.sendall(payload[sent:])
    else:
        conn.sendall(payload)


def _recv_exact(conn: socket.socket, size: int, first: bytes = b"") -> bytes:
    buf = bytearray(first)
    while len(buf) < size:
        chunk = conn.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf.extend(chunk)
    return bytes(buf)


def _recv(conn: socket.socket, with_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
    fds: list[int] = []
    if with_fds:
        first, fds, _flags, _addr = socket.recv_fds(conn, 65536, with_fds)
        if not first:
            raise ConnectionError("connection closed")
    else:
        first = b""
    head = _recv_exact(conn, _HEADER.size, first[:_HEADER.size])
    (size,) = _HEADER.unpack(head)
    body = _recv_exact(conn, size, first[_HEADER.size:])
    return json.loads(body), fds


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        return conn
    except OSError:
        conn.close()
        return None


def _start_server(directory: Path, key: str, mode: str) -> socket.socket | None:
    """Connect to the key's server, starting it first if none answers (one starter at a time)."""
    import fcntl
    import subprocess

    path = directory / f"{key}.sock"
    conn = _connect(path)
    if conn is not None:
        return conn
    with open(directory / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)
        if conn is not None:
            return conn
        path.unlink(missing_ok=True)  # a dead server's socket
        with open(directory / f"{key}.log", "ab") as log:
            server = subprocess.Popen([sys.executable, "-m", "unlearn_da.warm_start", str(path), mode],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                      start_new_session=True, close_fds=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and server.poll() is None:
            conn = _connect(path)
            if conn is not None:
                return conn
            time.sleep(0.02)
    return None


def run_client(argv: list[str]) -> int | None:
    """Run ``argv`` in a fork of the server; its exit status, or None where it must run in-process."""
    import signal

    from .core import startup

    env = dict(os.environ)
    directory = socket_dir(env)
    if directory is None:
        return None
    mode = kernel_mode(argv)
    started = time.time() - startup.process_age()
    try:
        conn = _start_server(directory, server_key(mode, env), mode)
        if conn is None:
            return None
        _send(conn, {"argv": argv, "cwd": os.getcwd(), "env": env, "started": started}, [0, 1, 2])
        reply, _ = _recv(conn)
    except (OSError, ValueError, ConnectionError):
        return None  # nothing ran: the command runs here
    child = int(reply["pid"])

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        reply, _ = _recv(conn)
    except (OSError, ValueError, ConnectionError):
        print("error: the warm-start server stopped while it ran this job; run it again, or set "
              f"{ENV_SWITCH}=0 to run each job in its own process", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if "signal" in reply:  # end as the child did, so the caller sees the same status
        sig = int(reply["signal"])
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return int(reply["exit"])


# --------------------------------------------------------------------------- server side

def _run_child(request: dict[str, Any], fds: list[int], close: list[socket.socket]) -> int:
    """In the forked child: become the job's process, then run its command."""
    import io
    import signal
    import traceback

    for sock in close:
        sock.close()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _sync_kernel_variables()
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=os.isatty(1))
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), errors="backslashreplace",
                                  line_buffering=True)
    sys.argv = [sys.argv[0], *request["argv"]]

    from .core import startup
    from .cli import main

    startup.set_process_start(float(request["started"]))
    try:
        code = main(list(request["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - what the interpreter would print, then its status
        traceback.print_exc()
        code = 1
    try:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    return int(code) & 0xFF


def _sync_kernel_variables() -> None:
    """Set the dispatch variables of the kernel mode the server loaded the libraries with, as kernels.apply
    left them in the server: the client's environment holds its own mode's values (a job whose
    ``cpu_kernels`` param differs from the environment's mode)."""
    from .core import kernels

    mode = kernels.current_mode()
    if mode is None:
        return
    originals = json.loads(os.environ.get(kernels.ENV_ORIGINAL) or "{}")
    for key in kernels.ALL_VARIABLES:
        if originals.get(key) is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = originals[key]
    if mode == "portable":
        os.environ.update(kernels.portable_env())


def serve(path: Path, mode: str) -> None:
    """Import the libraries, then fork a child per request until idle for ``IDLE_SECONDS``."""
    import importlib
    import selectors
    import signal

    from .core import kernels

    kernels.apply(mode)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the job itself will meet and report it
            print(f"warm start: {name} not preloaded: {exc}", file=sys.stderr)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise SystemExit("warm start: CUDA was initialised while preloading; a fork would break it")
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp))
    listener.listen(64)
    inode = os.stat(tmp).st_ino
    os.replace(tmp, path)  # clients see the socket only once the libraries are loaded
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    last = time.monotonic()
    try:
        while not stop["now"]:
            for key, _events in selector.select(timeout=0.02):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    pid = _fork_job(conn, [listener, *children.values()], selector)
                    if pid is not None:
                        children[pid] = conn
                        selector.register(conn, selectors.EVENT_READ, pid)
                else:  # the client closed its end (it was killed): so is its job
                    conn = key.fileobj
                    selector.unregister(conn)
                    try:
                        os.kill(key.data, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                conn = children.pop(pid, None)
                if conn is None:
                    continue
                try:
                    selector.unregister(conn)
                except (KeyError, ValueError):
                    pass
                message = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                           else {"exit": os.WEXITSTATUS(status)})
                try:
                    _send(conn, message)
                except OSError:
                    pass
                conn.close()
            if children:
                last = time.monotonic()
            elif time.monotonic() - last > IDLE_SECONDS or not path.exists():
                _unlink_if_ours(path, inode)  # no new client from here; one already queued runs in-process
                break
    finally:
        _unlink_if_ours(path, inode)
        listener.close()


def _unlink_if_ours(path: Path, inode: int) -> None:
    """Remove the socket file unless another server has already put its own there."""
    try:
        if os.stat(path).st_ino == inode:
            path.unlink()
    except OSError:
        pass


def _fork_job(conn: socket.socket, close: list[socket.socket], selector: Any) -> int | None:
    try:
        conn.settimeout(10)
        request, fds = _recv(conn, with_fds=3)
        conn.settimeout(None)
    except (OSError, ValueError, ConnectionError):
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            selector.close()
            code = _run_child(request, fds, [*close, conn])
        except BaseException:  # noqa: BLE001 - before the command ran (its directory gone, ...): say why
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    try:
        _send(conn, {"pid": pid})
    except OSError:
        pass
    return pid


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2])

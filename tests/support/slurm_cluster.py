"""A private single-node SLURM cluster for tests: munge, MariaDB, slurmdbd, slurmctld, slurmd.

Everything (config, keys, state, spool, logs, the database) lives in one temporary
directory; every daemon listens on 127.0.0.1 only, on ports picked free at start.
Needs root (slurmd launches jobs as their owner) and Debian's ``slurm-wlm slurmdbd
munge mariadb-server`` (``make test-slurm`` installs them).

Container-friendly choices: ``proctrack/linuxproc`` and ``task/none`` (no cgroups, no
systemd), ``SelectTypeParameters=CR_CPU_Memory`` (CPUs and memory are the consumables).
Accounting goes through slurmdbd, so ``sacct`` and ``sacctmgr`` answer as on a real
cluster, and ``AccountingStorageEnforce=associations`` makes an unknown account an error.

    with SlurmCluster.started(Path(tempfile.mkdtemp(prefix="slurm-"))) as cluster:
        subprocess.run(["sbatch", ...], env=cluster.env())
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged")  # stop order
REQUIRED = ("unshare", "mount", "ss", "munged", "mungekey", "mariadb-install-db", "mariadbd", "mariadb", "slurmdbd", "slurmctld",
            "slurmd", "sbatch", "sacct", "sacctmgr", "scontrol", "sinfo", "scancel")


def missing_tools() -> list[str]:
    """The binaries this module runs that are not on PATH (or in /usr/sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [t for t in REQUIRED if shutil.which(t, path=path) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> dict[str, int]:
    """CPUs and memory as slurmd sees them (``slurmd -C``)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(f.split("=", 1) for f in out.splitlines()[0].split() if "=" in f)
    return {"cpus": int(fields["CPUs"]), "memory_mb": int(fields["RealMemory"])}


class SlurmCluster:
    """One controller, one compute node (this machine), one partition, one account."""

    def __init__(self, root: Path, *, cluster: str = "unlearnda", partition: str = "debug",
                 account: str = "unlearnda-test", memory_mb: int | None = None):
        self.root = Path(root)
        self.cluster, self.partition, self.account = cluster, partition, account
        self.node = socket.gethostname().split(".")[0]
        hw = _node_hardware()
        self.cpus = hw["cpus"]
        # leave the OS some room; slurmd drains a node that claims more than it has
        self.memory_mb = memory_mb or int(hw["memory_mb"] * 0.9)
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.db_socket = self.root / "db" / "mariadb.sock"
        self.ports = {k: _free_port() for k in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
        self.pidfiles = {
            "munged": self.root / "run" / "munged.pid",
            "mariadbd": self.root / "run" / "mariadbd.pid",
            "slurmdbd": self.root / "run" / "slurmdbd.pid",
            "slurmctld": self.root / "run" / "slurmctld.pid",
            "slurmd": self.root / "run" / "slurmd.pid",
        }
        self.logs = {name: self.root / "log" / f"{name}.log" for name in self.pidfiles}

    # ---------------------------------------------------------------- environment
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for client commands (sbatch, sacct, snakemake): points them at this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
        for var in [v for v in env if v.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if var != "SLURM_CONF":
                del env[var]
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                               + self.log_tails())
        return proc

    # ---------------------------------------------------------------- config files
    def _write_configs(self) -> None:
        for sub in ("etc", "munge", "db", "run", "log", "state", "spool", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged wants its socket reachable by all (the key stays in a 0700 directory)
        os.chmod(self.root, 0o755)
        (self.root / "etc" / "munge").mkdir(mode=0o700, exist_ok=True)
        r, p = self.root, self.ports
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        self.conf.write_text(f"""\
# written by tests/slurm_cluster.py: a private single-node cluster on 127.0.0.1
ClusterName={self.cluster}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={p['slurmctld']}
SlurmdPort={p['slurmd']}
# bind to the node's address (127.0.0.1) instead of every interface
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
{auth}CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={self.pidfiles['slurmctld']}
SlurmdPidFile={self.pidfiles['slurmd']}
SlurmctldLogFile={self.logs['slurmctld']}
SlurmdLogFile={self.logs['slurmd']}
SlurmctldDebug=info
SlurmdDebug=info
TmpFS={r}/tmp
# no cgroups in a container: track job processes by their parent, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={p['slurmdbd']}
# connections to slurmdbd take the MUNGE socket from here, not from AuthInfo
AccountingStoragePass={self.munge_socket}
AccountingStorageEnforce=associations
# keep sbatch --comment (the Snakemake plugin writes rule_<rule>_wildcards_... there) in sacct
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
DefMemPerCPU=1000
NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.node} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        dbd = self.conf.with_name("slurmdbd.conf")
        dbd.write_text(f"""\
{auth}DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={p['slurmdbd']}
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile={self.pidfiles['slurmdbd']}
LogFile={self.logs['slurmdbd']}
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={p['mariadb']}
StorageUser=slurm
StoragePass=slurm-test
StorageLoc=slurm_acct_db
""")
        os.chmod(dbd, 0o600)

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        if missing_tools():
            raise RuntimeError(f"missing {', '.join(missing_tools())}: apt-get install slurm-wlm slurmdbd "
                               "munge mariadb-server (make test-slurm does)")
        self._write_configs()
        self._start_munge()
        self._start_mariadb()
        self._daemon("slurmdbd", ["slurmdbd"])
        self._wait(lambda: self.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0,
                   "slurmdbd answers sacctmgr")
        self.run("sacctmgr", "-i", "add", "cluster", self.cluster)
        self.run("sacctmgr", "-i", "add", "account", self.account, f"cluster={self.cluster}",
                 "description=unlearning-da tests", "organization=tests")
        self.run("sacctmgr", "-i", "add", "user", "root", f"account={self.account}", f"cluster={self.cluster}")
        self._daemon("slurmctld", ["slurmctld", "-f", str(self.conf)])
        self._wait(lambda: self.run("scontrol", "ping", check=False).stdout.count("UP") > 0,
                   "slurmctld answers scontrol ping")
        # Jobs must find slurm.conf where a real cluster keeps it: the plugin's jobstep drops
        # SLURM_CONF from the environment of the `srun` it runs inside each job. slurmd (and
        # so every job it launches) gets a private mount namespace in which this cluster's
        # etc/ is mounted over /etc/slurm; nothing outside that namespace changes.
        mount = 'mount --bind "$0" /etc/slurm && exec slurmd -f "$1"'
        self._daemon("slurmd", ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount,
                                str(self.conf.parent), str(self.conf)])
        self._wait(self._node_idle, f"node {self.node} idle", timeout=90)

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
        return bool(out) and all(s.rstrip("*") == "idle" for s in out)

    def _start_munge(self) -> None:
        key = self.root / "etc" / "munge" / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        os.chmod(key, 0o400)
        self._daemon("munged", ["munged", f"--socket={self.munge_socket}", f"--key-file={key}",
                                f"--pid-file={self.pidfiles['munged']}", f"--log-file={self.logs['munged']}",
                                f"--seed-file={self.root / 'munge' / 'munged.seed'}", "--force"])

    def _start_mariadb(self) -> None:
        data = self.root / "db" / "data"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, text=True)
        self._daemon("mariadbd", [
            "mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.db_socket}",
            f"--port={self.ports['mariadb']}", "--bind-address=127.0.0.1", "--user=root",
            f"--pid-file={self.pidfiles['mariadbd']}", f"--log-error={self.logs['mariadbd']}",
            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M", "--skip-name-resolve",
        ], foreground=True)
        sql = ("CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-test';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        self._wait(lambda: subprocess.run(["mariadb", "--no-defaults", f"--socket={self.db_socket}", "-u", "root",
                                           "-e", "SELECT 1"], capture_output=True).returncode == 0,
                   "mariadb answers")
        subprocess.run(["mariadb", "--no-defaults", f"--socket={self.db_socket}", "-u", "root", "-e", sql],
                       check=True, capture_output=True, text=True)

    def _daemon(self, name: str, cmd: list[str], foreground: bool = False) -> None:
        """Start a daemon; it forks and writes its pid file (mariadbd stays in the foreground
        and writes one too). Its stdout/stderr go to log/<name>.out."""
        out = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 (the daemon keeps it)
        proc = subprocess.Popen(cmd, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        if not foreground:
            rc = proc.wait(timeout=60)
            if rc != 0:
                raise RuntimeError(f"{name} did not start (exit {rc}):\n" + self.log_tails())
        self._wait(lambda: self._pid(name) is not None, f"{name} writes its pid file")

    def _wait(self, ok, what: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ok():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for: {what}\n" + self.log_tails())

    # ---------------------------------------------------------------- stop
    def _pid(self, name: str) -> int | None:
        """The daemon's pid from its pid file, if that process is alive and is that daemon."""
        try:
            pid = int(self.pidfiles[name].read_text().split()[0])
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            return None
        return pid if name.startswith(comm) or comm.startswith(name[:15]) else None

    def _marked_processes(self) -> list[int]:
        """Processes started by this cluster: their environment points at this cluster's
        slurm.conf (daemons, slurmstepd and the jobs' own processes all inherit it)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        own = {os.getpid(), os.getppid()}
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) in own:
                continue
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        """Cancel jobs, stop every daemon by its pid file, then any process left that this
        cluster started (found by its SLURM_CONF). Safe to call twice and after a failed start."""
        if self._pid("slurmctld") is not None:
            self.run("scancel", "--full", "-u", "root", check=False, timeout=20)
            with contextlib.suppress(RuntimeError):
                self._wait(lambda: not self.run("squeue", "-h", check=False).stdout.strip(), "jobs gone", 30)
        for name in DAEMONS:
            pid = self._pid(name)
            if pid is not None:
                self._terminate(pid)
        for pid in self._marked_processes():
            self._terminate(pid, grace=2)

    @staticmethod
    def _terminate(pid: int, grace: float = 20) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while time.monotonic() < end:
            if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def listening(self) -> dict[str, list[str]]:
        """daemon -> the local addresses its TCP sockets listen on (from ``ss``)."""
        pids = {self._pid(name): name for name in DAEMONS}
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
        found: dict[str, list[str]] = {}
        for line in out.splitlines():
            for pid, name in pids.items():
                if pid is not None and f"pid={pid}," in line:
                    found.setdefault(name, []).append(line.split()[3])
        return found

    def running(self) -> list[str]:
        return [name for name in DAEMONS if self._pid(name) is not None]

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    @classmethod
    @contextlib.contextmanager
    def started(cls, root: Path, **kwargs) -> Iterator[SlurmCluster]:
        cluster = cls(root, **kwargs)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False

"""Throw-away servers for DVC remote tests: moto's S3 server and an OpenSSH sshd.

Both listen on 127.0.0.1 only, on a free port, keep all their state in a
temporary directory, and are stopped when the ``with`` block ends, also when it
ends with an exception:

    with s3_server(tmp) as s3:      # moto's standalone S3 server, one bucket
        s3.endpoint, s3.bucket, s3.env, s3.client()
    with ssh_server(tmp) as ssh:    # /usr/sbin/sshd -D, key auth only
        ssh.host, ssh.port, ssh.user, ssh.key, ssh.env

``env`` holds the environment variables a client subprocess (dvc) needs: dummy
AWS credentials and a region for S3, with the AWS config files pointed into the
temp dir; for SSH a HOME of its own, so that a user's ``~/.ssh/config`` and keys
(which asyncssh, under dvc-ssh, reads) stay out. That HOME's ``.ssh/known_hosts``
trusts the server's host key, for OpenSSH's ``ssh`` client: dvc-ssh itself checks
no host key (sshfs connects with asyncssh's ``known_hosts=None``), it accepts any.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOCALHOST = "127.0.0.1"
SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"server for port {port} exited before listening")
        with contextlib.suppress(OSError), socket.create_connection((LOCALHOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOCALHOST}:{port} after {timeout} s")


# ---------------------------------------------------------------------- S3 (moto)


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"
    env: dict[str, str] = field(default_factory=dict)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key)

    def usage(self, prefix: str = "") -> tuple[int, int]:
        """(objects, bytes) stored under ``prefix`` in the bucket."""
        objects = size = 0
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                objects += 1
                size += obj["Size"]
        return objects, size


@contextlib.contextmanager
def s3_server(tmp: Path, bucket: str = "unlearn-da-test") -> Iterator[S3Server]:
    """moto's S3 server in a thread of this process (``ThreadedMotoServer``), one bucket.

    The thread dies with the process, so no server outlives the tests even after
    a crash; ``stop()`` runs when the block ends either way. ``env`` points the
    AWS config and credential files into ``tmp`` (so a user's ~/.aws is never read)
    and sets dummy credentials and the region.
    """
    from moto.server import ThreadedMotoServer

    request_log = logging.getLogger("werkzeug")  # one line per request: thousands per push
    level = request_log.level
    request_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=LOCALHOST, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(endpoint=f"http://{host}:{port}", bucket=bucket)
        s3.env = {
            "AWS_ACCESS_KEY_ID": s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
            "AWS_DEFAULT_REGION": s3.region,
            "AWS_CONFIG_FILE": str(tmp / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
        request_log.setLevel(level)


# ---------------------------------------------------------------------- SSH (OpenSSH)


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    key: Path            # the client's private key (ed25519, no passphrase)
    home: Path           # HOME for clients: .ssh/known_hosts trusts this server
    log: Path            # sshd's log (-E)
    env: dict[str, str] = field(default_factory=dict)


def sshd_available() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh-keygen") is not None


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


def _sshd_config(root: Path, port: int, user: str) -> Path:
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress {LOCALHOST}",
        f"Port {port}",
        f"HostKey {root / 'host_ed25519'}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"AllowUsers {user}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        # the key files live under /tmp, which is group/world writable: StrictModes would refuse them
        "StrictModes no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
        "MaxStartups 64:30:128",
        "MaxSessions 64",
        "LogLevel INFO",
        "",
    ]))
    return config


@contextlib.contextmanager
def ssh_server(tmp: Path, timeout: float = 20.0) -> Iterator[SSHServer]:
    """OpenSSH's sshd (Debian's openssh-server) in the foreground (``-D``) on 127.0.0.1.

    Host key, client key, authorized_keys, config, pid file and log all live in
    ``tmp``; only public-key login of the current user is allowed. The process is
    killed when the block ends. As root, sshd needs its privilege-separation
    directory /run/sshd, which the Debian package creates only through its init
    scripts: it is created here if missing (empty, mode 0755).
    """
    if not sshd_available():
        raise FileNotFoundError(f"{SSHD} not found: apt-get install openssh-server (make test-remotes does)")
    user = getpass.getuser()
    root = tmp / "sshd"
    home = tmp / "ssh-home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    root.mkdir(mode=0o700)
    _keygen(root / "host_ed25519", "unlearn-da-test-host")
    key = home / ".ssh" / "id_ed25519"
    _keygen(key, "unlearn-da-test-client")
    (root / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (root / "authorized_keys").chmod(0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = root / "sshd.log"

    proc = None
    for _attempt in range(5):  # another process may take the free port before sshd binds it
        port = free_port()
        config = _sshd_config(root, port, user)
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t rejects the test config: {check.stderr}")
        log.write_text("")
        proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port(port, timeout, alive=lambda p=proc: p.poll() is None)
            break
        except RuntimeError:
            if "Address already in use" not in log.read_text():
                raise RuntimeError(f"sshd exited:\n{log.read_text()}") from None
            proc = None
    if proc is None:
        raise RuntimeError(f"sshd found no free port:\n{log.read_text()}")
    try:
        host_pub = (root / "host_ed25519.pub").read_text().split()
        (home / ".ssh" / "known_hosts").write_text(f"[{LOCALHOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
        env = {"HOME": str(home)}
        yield SSHServer(host=LOCALHOST, port=port, user=user, key=key, home=home, log=log, env=env)
    finally:
        # sshd forks a child per connection, which calls setsid(): the children are not in
        # sshd's process group. Collect them (by parent pid) before stopping the listener,
        # then stop them too; normally there are none left, dvc has disconnected.
        children = _descendants(proc.pid)
        for pid in [proc.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 5
        for pid in children:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (from /proc)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            # the command name (2nd field) is in parentheses and may contain spaces
            out[int(stat.parent.name)] = int(text[text.rindex(")") + 2:].split()[1])
    return out


def _descendants(pid: int) -> list[int]:
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie of another parent counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] != "Z"

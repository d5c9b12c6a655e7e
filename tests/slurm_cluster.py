"""A real single-host SLURM for tests: munged, slurmctld and slurmd from Debian's packages.

Use the session fixture from a test module with ``from slurm_cluster import slurm_cluster  # noqa: F401``
(or add ``pytest_plugins = ["slurm_cluster"]`` to the root conftest). It yields the ``SLURM_CONF`` path,
exported for the whole session, and skips with the reason when SLURM cannot run here.

Facts behind the config are in ../shared/notes/slurm-one-host.md. Everything lives in a private temp dir
with free ports and a private munge socket, so it cannot clash with another SLURM on the host, and at the
end exactly the three daemons started here are stopped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun")
SETUP_HINT = "run `.ci/setup_slurm.sh` as root to install Debian's slurmctld, slurmd, slurm-client and munge"


def unavailable_reason() -> str | None:
    """Why a local SLURM cannot be started here, or None when it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return f"SLURM tests need root (slurmd runs jobs as their user); {SETUP_HINT}"
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"SLURM binaries not found: {', '.join(missing)}; {SETUP_HINT}"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return f"no 'munge' user; {SETUP_HINT}"
    if not Path("/etc/munge/munge.key").exists():
        return f"/etc/munge/munge.key is missing; {SETUP_HINT}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """`NodeName=... CPUs=... RealMemory=...` as measured by `slurmd -C` (larger values drain the node)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(f.split("=", 1) for f in out.split()[:20] if "=" in f)
    host = socket.gethostname().split(".")[0]  # = `hostname -s`, what slurmd calls itself
    return f"NodeName={host} CPUs={fields['CPUs']} RealMemory={fields['RealMemory']} Gres=gpu:2 State=UNKNOWN"


def _slurm_conf(root: Path, munge_socket: Path) -> str:
    host = socket.gethostname().split(".")[0]
    return f"""\
ClusterName=stitching-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
# without a default, a job with no --mem takes the whole node and jobs serialise
DefMemPerCPU=1000
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SchedulerParameters=sched_interval=2,bf_interval=2
GresTypes=gpu
{_node_line()}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class SingleHostSlurm:
    """munged + slurmctld + slurmd in the foreground under one temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []

    def start(self, timeout_s: float = 60) -> None:
        munge_dir = self.root / "munge"
        for sub in ("state", "spool", "gpu"):
            (self.root / sub).mkdir()
        munge_dir.mkdir()
        munge = pwd.getpwnam("munge")
        os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
        munge_socket = munge_dir / "munge.socket"
        # fake GPUs: gres.conf needs File= entries (Count= alone leaves the node INVALID on 22.05)
        for i in range(2):
            (self.root / "gpu" / f"fakegpu{i}").touch()
        (self.root / "gres.conf").write_text(f"AutoDetect=off\nName=gpu File={self.root}/gpu/fakegpu[0-1]\n")
        self.conf.write_text(_slurm_conf(self.root, munge_socket))

        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        log = open(self.root / "daemons.out", "ab")
        self._log = log
        self._spawn(
            [
                "munged",
                "-F",
                f"--socket={munge_socket}",
                f"--pid-file={munge_dir}/munged.pid",
                f"--seed-file={munge_dir}/munged.seed",
                f"--log-file={munge_dir}/munged.log",
            ],
            env,
            user=munge.pw_uid,
            group=munge.pw_gid,
        )
        self._wait(lambda: munge_socket.exists(), timeout_s, "munged socket")
        self._spawn(["slurmctld", "-D", "-f", str(self.conf)], env)
        self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), timeout_s, "slurmctld (scontrol ping)")
        self._spawn(["slurmd", "-D", "-f", str(self.conf)], env)
        self._wait(lambda: self._ok(["sinfo", "-h", "-o", "%T"], "idle"), timeout_s, "the node to be idle")

    def stop(self) -> None:
        """Cancel this cluster's jobs, let them finish, then stop exactly the daemons started here."""
        if len(self.procs) == 3 and all(p.poll() is None for p in self.procs):  # fully up
            self._drain_jobs()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        self._log.close()

    def _drain_jobs(self, timeout_s: float = 30) -> None:
        # a job step still tearing down when slurmd stops leaves its slurmstepd behind for good
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            res = subprocess.run(
                ["squeue", "--noheader", "--states=all", "--format=%T"],
                env=env,
                capture_output=True,
                text=True,
            )
            if res.returncode == 0 and not set(res.stdout.split()) & {
                "RUNNING",
                "COMPLETING",
                "PENDING",
                "CONFIGURING",
                "SUSPENDED",
            }:
                return
            time.sleep(0.5)

    def _spawn(self, cmd: list[str], env: dict, **kwargs) -> None:
        self.procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.root, **kwargs
            )
        )

    def _ok(self, cmd: list[str], expect: str) -> bool:
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        return res.returncode == 0 and expect in res.stdout

    def _wait(self, check, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                tail = (self.root / "daemons.out").read_text()[-2000:]
                for name in ("slurmctld.log", "slurmd.log"):
                    if (self.root / name).exists():
                        tail += f"\n--- {name}\n" + (self.root / name).read_text()[-2000:]
                raise RuntimeError(f"SLURM did not come up waiting for {what} (exited: {dead}):\n{tail}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """A running single-host SLURM; yields the ``SLURM_CONF`` path (exported while the session runs)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    # not under pytest's tmp dir: that is mode 700 and the munge user must reach its socket
    root = Path(tempfile.mkdtemp(prefix="stitching-slurm-"))
    root.chmod(0o755)
    cluster = SingleHostSlurm(root)
    cluster.start()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster.conf
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(root, ignore_errors=True)

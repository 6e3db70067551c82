"""A real multi-node Ray cluster on this machine, as the README's recipe starts one: ``ray start --head`` then
``ray start --address`` per node, every node on 127.0.0.1, with Ray's defaults (token authentication
included: the cluster's token is in ``<home>/.ray/auth_token``, where ``ray start --head`` finds it).

Each ``ray start --block`` runs in a session of its own, and ``stop()`` ends the processes of those sessions
(Ray's workers included) by their ids: ``ray stop`` would end every Ray process of the machine, other
clusters too. Used by ``tests/test_ray.py`` and ``bench/bench_ray_intake.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
START_S = 90.0  # a node gets this long to say it started (2 busy cores: Ray starts in 5-20 s)
STOP_S = 10.0  # processes get this long after SIGTERM before SIGKILL
LOOPBACK = "127.0.0.1"
RAY_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def session_members(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry))
    return members


def end_session(sid: int) -> None:
    """SIGTERM every process of session ``sid``, then SIGKILL those left after ``STOP_S``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(sid):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + STOP_S
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.2)


def can_hide_folders() -> bool:
    """Whether a node can be started in a private mount namespace (root and ``unshare -m`` work here)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


class LoopbackCluster:
    """A head (``head_cpus`` CPUs, 0 by default: tasks must run on other nodes) and the nodes added to it.

    ``home`` becomes ``$HOME`` of every Ray process, holding the cluster's token. ``env`` is the environment
    they start from; Ray's own variables are removed from it (the defaults are what is tested), and nodes
    other than the head get ``RAY_AUTH_MODE=token``, without which Ray 2.60's ``ray start --address`` does
    not join a token cluster.
    """

    def __init__(self, home: Path, env: dict | None = None, head_cpus: int = 0) -> None:
        self.home = Path(home)
        self.temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths are limited
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        base = {k: v for k, v in (env if env is not None else os.environ).items() if k not in RAY_VARIABLES}
        self.env = {**base, "HOME": str(self.home), "RAY_USAGE_STATS_ENABLED": "0"}
        self.nodes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.head_cpus = head_cpus

    # --- starting

    def generate_token(self) -> str:
        """``ray get-auth-token --generate``: the token a first ``ray.init`` would have written."""
        done = subprocess.run(
            [RAY, "get-auth-token", "--generate"], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return (self.home / ".ray" / "auth_token").read_text().strip()

    def _ports(self) -> list[str]:
        return [
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--dashboard-agent-grpc-port",
            str(free_port()),
            "--metrics-export-port",
            str(free_port()),
            "--runtime-env-agent-port",
            str(free_port()),
        ]

    def _start(self, name: str, command: list[str], env: dict) -> str:
        log = self.temp / f"{name}.log"
        with open(log, "wb") as out:
            self.nodes[name] = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
            )
        self.logs[name] = log
        deadline = time.monotonic() + START_S
        while b"Ray runtime started" not in log.read_bytes():
            if self.nodes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray node {name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return log.read_text()

    def start_head(self, **resources) -> str:
        """``ray start --head``; returns what it printed."""
        command = [RAY, "start", "--head", "--block", "--node-ip-address", LOOPBACK, "--port", str(self.port)]
        command += ["--num-cpus", str(self.head_cpus), "--temp-dir", str(self.temp), "--include-dashboard", "false"]
        command += ["--ray-client-server-port", str(free_port()), *self._ports(), *_resources(resources)]
        return self._start("head", command, self.env)

    def add_node(self, name: str, num_cpus: int = 1, hide: Path | None = None, env: dict | None = None, **resources):
        """``ray start --address`` of one more node; with ``hide``, that folder is an empty tmpfs for the node
        (a private mount namespace: the node cannot see what the driver writes there)."""
        command = [RAY, "start", "--block", "--address", self.address, "--node-ip-address", LOOPBACK]
        command += ["--num-cpus", str(num_cpus), *self._ports(), *_resources(resources)]
        if hide is not None:
            command = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs spikernel "$0" && exec "$@"', str(hide), *command]
        return self._start(name, command, {**self.env, "RAY_AUTH_MODE": "token", **(env or {})})

    # --- failures and the end

    def raylet(self, name: str) -> int:
        """The pid of node ``name``'s raylet."""
        for pid in session_members(self.nodes[name].pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
            except OSError:
                continue
        raise RuntimeError(f"node {name} has no raylet")

    def kill_raylet(self, name: str) -> None:
        os.kill(self.raylet(name), signal.SIGKILL)

    def stop_node(self, name: str) -> None:
        process = self.nodes.pop(name)
        end_session(process.pid)
        process.wait(STOP_S)

    def stop(self) -> None:
        """End every node, the head last, and remove the cluster's temporary folder."""
        for name in [n for n in self.nodes if n != "head"] + (["head"] if "head" in self.nodes else []):
            try:
                self.stop_node(name)
            except Exception:  # the others are still stopped
                pass
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _resources(resources: dict) -> list[str]:
    gpus = resources.pop("num_gpus", None)
    out = ["--num-gpus", str(gpus)] if gpus is not None else []
    return out + (["--resources", json.dumps(resources)] if resources else [])

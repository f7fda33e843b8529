"""Server processes: spawn on a free 127.0.0.1 port, wait until ready, read CPU and memory, stop.

Every server runs in its own session (process group), so stopping it also stops the worker
processes it forked (LitServe's inference workers).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerError(RuntimeError):
    """A server exited or did not become ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request to the server on ``HOST:port``; returns (status, body)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- /proc readers ------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are still alive."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        if Path(f"/proc/{current}").exists():
            tree.append(current)
            pending += _children(current)
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread of one process, keyed ``"<tid> <name>"``."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        threads[f"{task.name} {name}"] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return threads


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of one process, in KiB (empty when it is gone)."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


# -- server lifecycle ----------------------------------------------------------------------------------
@dataclass
class ServerSpec:
    """How to start one server: argv and env (``{port}`` and ``{grpc_port}`` are substituted), readiness path."""

    name: str
    argv: list[str]
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 180.0


@dataclass
class Server:
    spec: ServerSpec
    port: int
    process: subprocess.Popen
    log_path: Path
    grpc_port: int = 0
    ready_s: float = float("nan")

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def tree_cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in process_tree(self.pid))

    def tree_rss_kib(self) -> int:
        return sum(memory_kib(pid).get("VmRSS", 0) for pid in process_tree(self.pid))

    def wait_ready(self, started: float) -> None:
        deadline = started + self.spec.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.spec.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                status, _ = http_request(self.port, "GET", self.spec.ready_path)
            except OSError:
                status = 0
            if status == 200:
                self.ready_s = time.monotonic() - started
                logger.info("%s ready on port %d after %.2f s", self.spec.name, self.port, self.ready_s)
                return
            time.sleep(0.05)
        raise ServerError(f"{self.spec.name} not ready after {self.spec.ready_timeout_s:.0f} s; see {self.log_path}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after ``grace_s``."""
        if self.process.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM; killing it", self.spec.name)
        _signal_group(self.pid, signal.SIGKILL)  # stragglers (forked workers) too
        if self.process.poll() is None:
            self.process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def start_server(spec: ServerSpec, log_dir: Path, cwd: Path) -> Server:
    """Spawn the server on a free port and wait for its readiness path to answer 200."""
    port, grpc_port = free_port(), free_port()
    argv = [arg.format(port=port, grpc_port=grpc_port) for arg in spec.argv]
    log_path = log_dir / f"{spec.name}.log"
    env = {**os.environ, **{k: v.format(port=port, grpc_port=grpc_port) for k, v in spec.env.items()}}
    logger.info("starting %s: %s", spec.name, " ".join(argv))
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    server = Server(spec, port, process, log_path, grpc_port)
    try:
        server.wait_ready(started)
    except BaseException:
        server.stop()
        raise
    return server

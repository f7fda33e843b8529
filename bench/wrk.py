"""Run wrk (closed loop: each connection sends its next request when the previous answer arrives)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.payloads import Payload

logger = logging.getLogger(__name__)

SCRIPT = Path(__file__).resolve().parent / "lua" / "post.lua"
_MARKER = "BENCH_JSON "


class WrkError(RuntimeError):
    """wrk failed to run or printed no summary."""


@dataclass
class WrkResult:
    """One wrk run: counts, throughput, latency percentiles (ms) and wrk's own CPU time."""

    connections: int
    duration_s: float
    requests: int
    images_per_request: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    wrk_cpu_s: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def images_per_s(self) -> float:
        return self.requests_per_s * self.images_per_request

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "requests_per_s": self.requests_per_s, "images_per_s": self.images_per_s}


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk)")
    return path


def run_wrk(
    url: str, payload: Payload, *, connections: int, duration_s: int, threads: int = 1, timeout_s: int = 30
) -> WrkResult:
    """Drive ``url`` with ``payload``'s bodies from ``connections`` connections for ``duration_s`` seconds."""
    threads = max(1, min(threads, connections))
    argv = [
        wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", f"--timeout={timeout_s}s",
        "-s", str(SCRIPT), url, "--", str(payload.directory), str(payload.bodies),
    ]  # fmt: skip
    returncode, cpu_s, stdout, stderr = run_measured(argv, duration_s + timeout_s + 30)
    line = next((ln for ln in stdout.splitlines() if ln.startswith(_MARKER)), None)
    if returncode != 0 or line is None:
        raise WrkError(f"wrk exited {returncode}: {stderr.strip() or stdout.strip()}")
    summary = json.loads(line[len(_MARKER) :])
    return WrkResult(
        connections=connections,
        duration_s=summary["duration_us"] / 1e6,
        requests=summary["requests"],
        images_per_request=payload.images_per_request,
        errors=summary["errors"],
        latency_ms={k: v / 1000 for k, v in summary["latency_us"].items()},
        wrk_cpu_s=cpu_s,
    )


def run_measured(argv: list[str], kill_after_s: float) -> tuple[int, float, str, str]:
    """Run a load generator to its end (killed after ``kill_after_s``); return its exit code, CPU seconds
    (user + system, from the kernel), stdout and stderr."""
    logger.debug("running %s", " ".join(argv))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        watchdog = threading.Timer(kill_after_s, process.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            watchdog.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return process.returncode, usage.ru_utime + usage.ru_stime, out.read(), err.read()

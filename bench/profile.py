"""Where the service's CPU goes under load: per-thread CPU from /proc, event-loop time split with py-spy.

Threads are grouped by what they do (the event loop, the batch threads, the inference executor,
Starlette's threadpool, the engine's compute pool); the event loop's CPU is then split into categories
by py-spy samples, attributing each sample to the innermost frame that matches a rule.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import thread_cpu_seconds

logger = logging.getLogger(__name__)

# (category, substrings of a py-spy frame "function (file:line)"); the innermost matching frame wins.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("model call", ("tensorflow/", "keras/")),
    ("JSON parse", ("json/decoder.py", "loads (json/", "parse_json", "orjson")),
    (
        "response encode",
        ("json/encoder.py", "dumps (json/", "dumps (service/core/wire.py", "encode_", "_json (service"),
    ),
    (
        "tensor conversion + validation",
        ("json_array", "_flatten_nested", "to_array", "tensor_to_batch", "_checked_batch", "numpy/"),
    ),
    ("image decode", ("PIL/", "service/inference/preprocess.py")),
    ("multipart parse", ("multipart/", "formparsers.py")),
    ("batcher", ("service/hosting/batcher.py",)),
    ("metrics", ("prometheus_client/", "service/core/metrics.py")),
    ("logging (access log)", ("logging/",)),
    ("decode (service/codecs)", ("service/codecs/",)),
    ("pipeline (service/inference/pipeline.py)", ("service/inference/pipeline.py", "service/hosting/table.py")),
    ("request handlers (service)", ("service/",)),
    ("HTTP server (uvicorn)", ("uvicorn/", "h11/", "httptools")),
    ("framework (Starlette/FastAPI/anyio/pydantic)", ("starlette/", "fastapi/", "anyio/", "pydantic")),
]
# Frames that only pass control on (event loop, context managers): attribute to the caller instead.
_TRANSPARENT = ("asyncio/", "uvloop", "contextlib.py", "functools.py", "<frozen", "threading.py", "queue.py")
# A sample whose innermost frame is one of these is the event loop itself: socket I/O and callbacks.
_LOOP = ("asyncio/runners.py", "asyncio/base_events.py", "asyncio/selector_events.py", "selectors.py", "uvloop")
_THREAD = re.compile(r"^thread \((\d+)\): ?(.*)$")
_DUMP_THREAD = re.compile(r'^Thread (\d+) \([^)]*\): "(.*)"$')
EVENT_LOOP = "event loop (MainThread)"
LOOP_IO = "event loop: socket I/O, callbacks"


@dataclass
class Profile:
    """CPU seconds by thread group, and the event loop's CPU seconds by category, over one window."""

    window_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)
    event_loop_s: dict[str, float] = field(default_factory=dict)
    samples: int = 0

    def per_request_ms(self, requests_per_s: float) -> dict[str, dict[str, float]]:
        scale = 1000 / max(requests_per_s * self.window_s, 1.0)
        return {
            "threads": {k: v * scale for k, v in self.cpu_s.items()},
            "event_loop": {k: v * scale for k, v in self.event_loop_s.items()},
        }


def categorize(frames: list[str]) -> str:
    """The category of one sample (frames outermost first)."""
    if not frames or any(marker in frames[-1] for marker in _LOOP):
        return LOOP_IO
    for frame in reversed(frames):
        if any(marker in frame for marker in _TRANSPARENT):
            continue
        for category, markers in RULES:
            if any(marker in frame for marker in markers):
                return category
        return "other"
    return LOOP_IO


def parse_raw(text: str) -> tuple[dict[str, Counter], dict[int, str]]:
    """py-spy ``--format raw --threads`` output → sample counts per category per thread name, tid → name."""
    by_thread: dict[str, Counter] = {}
    names: dict[int, str] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        match = _THREAD.match(head)
        if not match:
            continue
        tid, name = int(match.group(1)), match.group(2) or "thread"
        names[tid] = name
        by_thread.setdefault(name, Counter())[categorize(frames)] += int(count)
    return by_thread, names


def thread_group(name: str, comm: str, is_main: bool) -> str:
    """What a thread does, from its Python name (empty for threads Python does not know) and its comm."""
    if is_main:
        return EVENT_LOOP
    if name.startswith("batch-"):
        return "batch threads (model calls)"
    if name.startswith("inference"):
        return "inference executor (large decodes, feature maps)"
    if name.startswith("AnyIO"):
        return "Starlette threadpool (sync dependencies)"
    if name:
        return "other Python threads"
    return "engine compute (native threads)" if comm.startswith(("tf_", "python")) else f"native: {comm}"


def py_spy_binary() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def thread_names(binary: str, pid: int) -> dict[int, str]:
    """Python thread names by OS thread id, from ``py-spy dump``."""
    done = subprocess.run([binary, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True)
    names = {}
    for line in done.stdout.splitlines():
        match = _DUMP_THREAD.match(line)
        if match:
            names[int(match.group(1))] = match.group(2)
    return names


class Profiler:
    """Start while the load runs; ``finish()`` returns when py-spy has recorded ``seconds``."""

    def __init__(self, pid: int, seconds: int, output: Path, rate: int = 100) -> None:
        self.pid = pid
        self.output = output
        self._process: subprocess.Popen | None = None
        self._names: dict[int, str] = {}
        binary = py_spy_binary()
        if binary is None:
            logger.warning("py-spy not found; the profile has per-thread CPU only")
        else:
            self._names = thread_names(binary, pid)
            argv = [
                binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate),
                "--format", "raw", "--threads", "--nonblocking", "--output", str(output),
            ]  # fmt: skip
            self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._before = thread_cpu_seconds(pid)
        self._started = time.monotonic()
        self._seconds = seconds

    def finish(self) -> Profile:
        by_thread: dict[str, Counter] = {}
        if self._process is not None:
            _, stderr = self._process.communicate(timeout=self._seconds + 60)
            if self._process.returncode == 0 and self.output.exists():
                by_thread, names = parse_raw(self.output.read_text())
                self._names.update(names)
            else:
                logger.warning("py-spy failed (%s): %s", self._process.returncode, stderr.strip()[-500:])
        else:
            time.sleep(max(self._seconds - (time.monotonic() - self._started), 0))
        after = thread_cpu_seconds(self.pid)
        profile = Profile(window_s=time.monotonic() - self._started)
        for key, seconds in after.items():
            tid_text, _, comm = key.partition(" ")
            tid = int(tid_text)
            group = thread_group(self._names.get(tid, ""), comm, tid == self.pid)
            profile.cpu_s[group] = profile.cpu_s.get(group, 0.0) + seconds - self._before.get(key, 0.0)
        loop_samples = by_thread.get("MainThread", Counter())
        profile.samples = sum(loop_samples.values())
        loop_cpu = profile.cpu_s.get(EVENT_LOOP, 0.0)
        for category, count in loop_samples.most_common():
            profile.event_loop_s[category] = loop_cpu * count / profile.samples
        return profile

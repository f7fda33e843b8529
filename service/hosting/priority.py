"""Thread priorities: the event loop before the model's computation.

Under load, a model compiled for several streams keeps one compute thread per stream busy, and the event
loop, which reads the requests, feeds the batches and writes the answers, is one more runnable thread than
there are cores (2 cores: two streams and the loop). The kernel's fair scheduler then makes the loop wait
for a core, while requests wait in the sockets and batches run smaller. So the threads that compute run
``CNN_COMPUTE_NICE`` nice levels below the threads that serve requests: the model loader, which starts the
engines' own threads (OpenVINO's streams, TensorFlow's pools; a thread starts at its creator's priority),
and the batch threads. They still get every cycle the loop leaves idle. Measured on 2 cores, 3 levels:
one-image gRPC calls +9% images per second, the REST routes unchanged; 10 levels cost the REST routes 3–5%
(the engine then also gives way to other processes on those cores). Linux only: elsewhere a thread's
priority is the process's, and this does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

_LOWEST = 19  # the highest nice value


def lower_current_thread(steps: int) -> None:
    """Run the calling thread, and each thread it starts from now on, ``steps`` nice levels lower."""
    if steps <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:  # on Linux, PRIO_PROCESS with a thread's id sets that thread's nice value alone
        now = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(_LOWEST, now + steps))
    except OSError as exc:  # a sandbox that forbids it: the thread keeps its priority
        logger.warning("cannot lower the priority of thread %s: %s", threading.current_thread().name, exc)

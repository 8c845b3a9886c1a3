"""Worker processes sharing one port, for the proxy and the control API.

The supervisor forks N workers (so they share the pages of what it loaded before, the scoring
data above all), each binds the port with SO_REUSEPORT and the kernel spreads connections over
them. The supervisor only starts, watches and stops them: SIGTERM/SIGINT stop them all, and
one worker dying takes the rest down (a service manager then restarts the whole service rather
than it running short-handed without anyone noticing).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from multiprocessing import connection
from typing import Any

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_OWN_METRICS_DIR = "ACTIVELEAD_OWNS_METRICS_DIR"


def multiprocess_metrics() -> None:
    """Make prometheus-client keep every worker's figures in files that /metrics sums.

    prometheus-client picks how it stores values once, when it is imported, from
    PROMETHEUS_MULTIPROC_DIR, and the metric modules are imported long before the supervisor
    knows it will fork. Without the variable the workers' figures stayed in their own memory and
    the summed /metrics was empty. So when it is not set, the supervisor sets it and execs its
    own command line again (same pid), this time with the variable in place from the start.
    """
    if os.environ.get(METRICS_DIR):
        if os.environ.pop(_OWN_METRICS_DIR, None):  # ours, from before the exec: ours to remove
            # atexit runs in this process only: forked workers leave through os._exit.
            atexit.register(shutil.rmtree, os.environ[METRICS_DIR], ignore_errors=True)
        return
    os.environ[METRICS_DIR] = tempfile.mkdtemp(prefix="activelead-metrics-")
    os.environ[_OWN_METRICS_DIR] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 - our own argv


def supervise(target: Callable[..., None], args: Callable[[int], tuple[Any, ...]], workers: int,
              name: str) -> int:
    """Fork `workers` processes running `target(*args(i))` and wait for them. Returns the exit
    code: 0 after a clean stop, 1 if a worker died on its own. Call with no event loop, thread or
    socket open in this process (that is what makes fork safe)."""
    ctx = multiprocessing.get_context("fork")
    procs: list[multiprocessing.process.BaseProcess] = []
    stopping = False

    def _stop(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    # Before the first fork: a stop asked for during start-up must reach every worker started.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for i in range(workers):
        if stopping:
            break
        started = ctx.Process(target=_worker, args=(target, *args(i)), name=f"{name}-w{i}")
        started.start()
        procs.append(started)
    code = 0
    running = list(procs)
    while running:
        # Whichever worker ends first (not just worker 0): one gone takes the others down.
        ended = connection.wait([proc.sentinel for proc in running])
        for done in [p for p in running if p.sentinel in ended]:
            done.join()
            running.remove(done)
            if done.exitcode and not stopping:
                code = 1
                _stop(signal.SIGTERM, None)
    return code


def _worker(target: Callable[..., None], *args: Any) -> None:
    # The supervisor's handlers came along with the fork; a worker's own (its event loop's)
    # replace these once it serves.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    target(*args)

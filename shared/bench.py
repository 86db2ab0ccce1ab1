"""Measurement helpers every ``<paper>/bench.py`` uses: timings, peak memory, the machine and its load.

- ``time_fn``: warm-up calls, then repeats; median, p95 and best (CUDA synchronised around each call).
- ``interleaved``: several functions timed in turns (a, b, a, b, ...), so a change of machine load during
  the run hits all of them alike and their ratio stays meaningful; the ratio of best times is the headline.
- ``PeakRSS``: resident-set growth over a block from the kernel's high-water mark (reset at the start);
  ``in_fresh_process`` runs a function in a new spawned interpreter, because a process that already ran the
  workload keeps freed buffers resident and would show (almost) no growth the second time.
- ``matmul_peak_gflops``: this machine's float32 GEMM throughput, measured in the same run as the figures
  it is compared with.
- ``machine_info``: CPU, cores, threads, load average before the run, memory, GPU, library versions; every
  bench JSON carries it, because two jobs on 2 cores distort every timing.
"""

from __future__ import annotations

import importlib.metadata
import math
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass
class Timing:
    """Seconds per call over ``runs`` timed calls."""

    median_s: float
    p95_s: float
    best_s: float
    runs: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _summary(times: Sequence[float]) -> Timing:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return Timing(statistics.median(ordered), p95, ordered[0], len(ordered))


def time_fn(
    fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 10, device: torch.device | str | None = None
) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return _summary(times)


def interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str | None = None,
) -> dict[str, Timing]:
    """Time several functions in turns; ``{name: Timing}`` (compare ``best_s`` for a load-robust ratio)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: _summary(ts) for name, ts in times.items()}


# --------------------------------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return rss_bytes()


class PeakRSS:
    """Resident-set growth over a block: the kernel's high-water mark, reset at the start.

    Where the mark cannot be reset, a thread samples the RSS every millisecond instead. Timed runs should not
    use this: on 2 cores a sampling thread preempts the compute threads and slows every parallel op.
    """

    def __enter__(self) -> PeakRSS:
        self.start = rss_bytes()
        self._hwm = _reset_peak_rss()
        self.peak = self.start
        if not self._hwm:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self._hwm:
            self.peak = max(self.peak, _peak_rss_bytes())
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _fresh_worker(fn: Callable[..., Any], threads: int, args: tuple, kwargs: dict) -> Any:
    torch.set_num_threads(threads)
    return fn(*args, **kwargs)


def in_fresh_process(fn: Callable[..., Any], *args: Any, threads: int = 1, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a newly spawned interpreter with ``threads`` torch threads; its result.

    ``fn`` must be a module-level function and its arguments picklable (a config, a ``state_dict``).
    """
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_fresh_worker, (fn, threads, args, kwargs))


# -------------------------------------------------------------------------------------------------- machine
def matmul_peak_gflops(n: int = 2048, reps: int = 5, device: torch.device | str = "cpu") -> float:
    """Best-of-``reps`` float32 ``torch.mm`` throughput of two n x n matrices on this machine, now."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    timing = time_fn(lambda: a @ b, warmup=2, repeats=reps, device=device)
    return 2 * n**3 / timing.best_s / 1e9


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(libraries: Sequence[str] = ()) -> dict[str, Any]:
    """What the figures of a benchmark depend on, read now (call it before the timed work)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = int(fh.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem_gb = None
    load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": [round(x, 2) for x in load],
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "libraries": {name: _version(name) for name in ("torch", "numpy", *libraries)},
        "platform": platform.platform(),
    }


def load_note(info: dict[str, Any]) -> str:
    """A sentence for reports: the 1-minute load average against the number of cores."""
    load, cores = info["load_average_1_5_15"][0], info["cores"] or 1
    # the 1-minute average lags: a job that just ended still shows as about one busy core
    busy = (
        "idle" if load < 0.5 else ("lightly loaded" if load < 0.75 * cores else "loaded: figures are noisy")
    )
    return f"load average {load:.2f} on {cores} cores before the run ({busy})"

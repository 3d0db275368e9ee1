"""The latency protocol shared by the host and the device, so both measure the same way.

Load time, first inference, warm-up, then timed runs until a count or a time budget is
reached; percentiles over the timed runs and the process's peak resident memory.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .runners import Feed, open_runner

PROTOCOL_VERSION = 1


@dataclass
class LatencyResult:
    artifact: str
    backend: str
    threads: Optional[int]
    load_ms: float
    first_ms: float
    warmup: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    peak_rss_mb: Optional[float]
    protocol: int = PROTOCOL_VERSION
    samples_ms: List[float] = field(default_factory=list)
    measured: bool = True
    reason: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def not_measured(cls, artifact: str, reason: str) -> "LatencyResult":
        """A latency entry that says it was not measured, and why (never an estimate)."""
        return cls(
            artifact=artifact, backend="", threads=None, load_ms=0.0, first_ms=0.0, warmup=0, runs=0,
            p50_ms=0.0, p90_ms=0.0, p99_ms=0.0, mean_ms=0.0, std_ms=0.0, min_ms=0.0, peak_rss_mb=None,
            measured=False, reason=reason,
        )


def peak_rss_mb() -> Optional[float]:
    """Peak resident set size of this process in MiB (None where the OS does not say)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)
    except Exception:
        return None


def time_calls(
    call: Callable[[], Any],
    warmup: int = 10,
    runs: int = 100,
    budget_s: Optional[float] = None,
    min_runs: int = 10,
) -> List[float]:
    """Time ``call`` after ``warmup`` untimed calls; stop at ``runs`` or when ``budget_s`` is spent."""
    for _ in range(warmup):
        call()
    samples: List[float] = []
    start = time.perf_counter()
    while len(samples) < runs:
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1e3)
        if budget_s is not None and len(samples) >= min_runs and time.perf_counter() - start > budget_s:
            break
    return samples


def summarize(samples_ms: List[float]) -> Dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std()),
        "min_ms": float(a.min()),
    }


def measure(
    path: str,
    feed: Feed,
    fmt: Optional[str] = None,
    threads: Optional[int] = None,
    warmup: int = 10,
    runs: int = 100,
    budget_s: Optional[float] = None,
    keep_samples: bool = True,
    **runner_options: Any,
) -> LatencyResult:
    """Run the whole protocol on one artifact with a batch-1 ``feed``."""
    t0 = time.perf_counter()
    runner = open_runner(path, fmt, threads=threads, **runner_options)
    load_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    runner.run(feed)
    first_ms = (time.perf_counter() - t0) * 1e3
    samples = time_calls(lambda: runner.run(feed), warmup=warmup, runs=runs, budget_s=budget_s)
    return LatencyResult(
        artifact=os.path.basename(str(path)),
        backend=f"{runner.backend} {runner.backend_version}",
        threads=threads,
        load_ms=load_ms,
        first_ms=first_ms,
        warmup=warmup,
        runs=len(samples),
        peak_rss_mb=peak_rss_mb(),
        samples_ms=[round(s, 4) for s in samples] if keep_samples else [],
        **summarize(samples),
    )

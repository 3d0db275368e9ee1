"""Where a build spends itself: wall time per stage and the peak memory of its process tree.

The peak is sampled from /proc (this process and every descendant: onnx2tf, runner children,
venv pips) because ``ru_maxrss`` sees one process at a time; both are kept, and the larger
is reported, so a child that lived between two samples still counts through RUSAGE_CHILDREN.
"""
from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children(pid: int) -> List[int]:
    out: List[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss(pid: Optional[int] = None) -> int:
    """Resident bytes of ``pid`` (default: this process) and all its descendants, now."""
    total, stack, seen = 0, [pid or os.getpid()], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss(p)
        stack += _children(p)
    return total


def _maxrss_bytes(who: int) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # kilobytes on Linux


class PeakMemory:
    """Samples the process tree's RSS on a daemon thread until ``stop()``."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.sampled = 0
        self.window = 0  # the largest sample since the last mark()
        self._stop = threading.Event()
        self._proc = os.path.isdir("/proc/self/task")
        self._thread = threading.Thread(target=self._run, name="edgeship-peak-memory", daemon=True)
        if self._proc:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = tree_rss()
            self.sampled = max(self.sampled, now)
            self.window = max(self.window, now)
            self._stop.wait(self.interval)

    def mark(self) -> None:
        """Start a new window: since_mark() is then the peak of one step."""
        self.window = tree_rss() if self._proc else 0

    def since_mark(self) -> int:
        if self._proc:
            self.window = max(self.window, tree_rss())
        return self.window

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def peak_bytes(self) -> int:
        if self._proc:
            self.sampled = max(self.sampled, tree_rss())
        return max(self.sampled, _maxrss_bytes(resource.RUSAGE_SELF), _maxrss_bytes(resource.RUSAGE_CHILDREN))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "peak_rss_mb": round(self.peak_bytes() / 2**20, 1),
            "how": (
                f"largest of: the resident memory of this process and its descendants sampled every {self.interval:g} s "
                "from /proc, and getrusage's ru_maxrss of the process and of its largest finished child"
                if self._proc
                else "getrusage ru_maxrss of the process and of its largest finished child (no /proc to sample the tree)"
            ),
        }


RELEASE_ABOVE = 256 << 20  # bytes a step must have grown the process tree by to be worth a gc + trim


def release_memory() -> None:
    """Collect cycles (TensorFlow graphs hold many) and return freed heap pages to the OS.

    Converters allocate and free model-sized buffers; glibc keeps freed ones in its arenas, so
    without malloc_trim each conversion's garbage stays resident and the peak grows step by step.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class Stages:
    """Wall time of each step of a build, in order, with the kind of work it was."""

    KINDS = ("load", "reference", "convert", "parity", "diagnosis", "timing", "bundle")

    def __init__(self, memory: Optional[PeakMemory] = None) -> None:
        self.t0 = time.perf_counter()
        self.steps: List[Dict[str, Any]] = []
        self.memory = memory

    @contextlib.contextmanager
    def time(self, kind: str, step: str, target: Optional[str] = None) -> Iterator[None]:
        """Time one step; with a memory sampler, also its own peak, and hand freed heap back after it."""
        t = time.perf_counter()
        start = 0
        if self.memory is not None:
            self.memory.mark()
            start = self.memory.window
        try:
            yield
        finally:
            entry: Dict[str, Any] = {"stage": kind, "step": step, "seconds": round(time.perf_counter() - t, 3)}
            if target:
                entry["target"] = target
            if self.memory is not None:
                peak = self.memory.since_mark()
                entry["peak_rss_mb"] = round(peak / 2**20, 1)
                if kind in ("convert", "diagnosis", "reference") and peak - start > RELEASE_ABOVE:
                    release_memory()  # only after steps that grew the heap: a full gc costs ~0.1 s with TF loaded
            self.steps.append(entry)

    def wall(self) -> float:
        return time.perf_counter() - self.t0

    def totals(self, steps: Optional[List[Dict[str, Any]]] = None) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for s in self.steps if steps is None else steps:
            out[s["stage"]] = round(out.get(s["stage"], 0.0) + s["seconds"], 3)
        return out


def breakdown(build: Dict[str, Any], top: int = 4) -> str:
    """"12.3 s (convert 6.1 s, parity 2.0 s, ...), peak memory 1.40 GiB (process tree)" from report.json's "build"."""
    by = sorted(build.get("by_stage", {}).items(), key=lambda kv: -kv[1])[:top]
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in by)
    peak = build.get("peak_memory", {}).get("peak_rss_mb")
    mem = f", peak memory {peak / 1024:.2f} GiB (process tree)" if peak is not None else ""
    return f"{build.get('wall_seconds', 0):.1f} s" + (f" ({stages})" if stages else "") + mem

"""Open and run untrusted model files in a child process first, so a file that crashes the runtime
(a malformed .tflite can segfault the LiteRT interpreter) is reported as a crash, not a dead process.

One child opens every file in turn and runs it once on zeros, printing a line per file before it
moves on; when it dies, the file it was on is the one that crashed it, and a new child goes on
with the rest. Stdlib + NumPy only (this ships in the bundle's runner).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

PROBE_TIMEOUT_S = 120.0
# A child that cannot even start the runner here (an emulated Python without binfmt, a wrapper
# that is not sys.executable): the caller falls back to opening the file in its own process.
_NO_CHILD = "__no_child__"
MAX_PROBE_ELEMENTS = 50_000_000  # inputs larger than this are opened, not run (the allocation itself is the risk)

_CHILD = r"""
import json, sys
sys.path.insert(0, ROOT)
try:
    import numpy as np
    from PKG.runners import open_runner
except BaseException as e:
    print("__import__ " + repr(e), flush=True)
    sys.exit(5)
items = json.loads(sys.stdin.read())
for i, (path, fmt, opts) in enumerate(items):
    print(json.dumps({"start": i}), flush=True)
    try:
        r = open_runner(path, fmt, threads=1, **opts)
        r.describe()
        interp = getattr(r, "_interp", None)
        if interp is not None:  # what the host reads off a TFLite file (op and tensor details)
            interp._get_ops_details()
            interp.get_tensor_details()
        feed, n = {}, 1
        for t in r.inputs:
            shape = [1] + [d if isinstance(d, int) and d > 0 else 1 for d in list(t.shape)[1:]]
            for d in shape:
                n *= d
            feed[t.name] = shape
        if n <= MAXN:  # twice: a damaged file can fail the first run and crash the second
            for _ in range(2):
                r.run({k: np.zeros(s, np.float32) for k, s in feed.items()})
        print(json.dumps({"ok": i}), flush=True)
    except BaseException as e:
        line = next((l.strip() for l in str(e).splitlines() if l.strip()), type(e).__name__)
        print(json.dumps({"error": i, "why": line[:300]}), flush=True)
"""


def _child_code() -> str:
    pkg = __package__ or "edgeship.runner"
    root = os.path.abspath(__file__)
    for _ in range(len(pkg.split(".")) + 1):
        root = os.path.dirname(root)
    return _CHILD.replace("ROOT", repr(root)).replace("PKG", pkg).replace("MAXN", str(MAX_PROBE_ELEMENTS))


def signal_name(code: int) -> str:
    """'SIGSEGV' for a return code of -11 (or a shell's 139)."""
    num = -code if code < 0 else code - 128
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def crashed(code: Optional[int]) -> bool:
    """A return code that means "killed by a signal": negative from subprocess, 129..159 from a shell."""
    return code is not None and (code < 0 or 128 < code < 160)


def probe_models(items: Sequence[Tuple[str, str, Dict[str, Any]]], timeout: float = PROBE_TIMEOUT_S, python: Optional[str] = None) -> List[Optional[str]]:
    """For each (path, format, runner options): None when a child process opened and ran it once,
    else why not (a crash with its signal, a hang, or the runtime's one-line error).
    Returns ``_NO_CHILD`` entries when no child could start here (callers then open in-process)."""
    results: List[Optional[str]] = [None] * len(items)
    todo = list(range(len(items)))
    python = python or os.environ.get("EDGESHIP_PROBE_PYTHON") or sys.executable
    while todo:
        batch = [list(items[i]) for i in todo]
        try:
            p = subprocess.run(
                [python, "-c", _child_code()], input=json.dumps(batch), capture_output=True, text=True,
                timeout=timeout * len(batch),
            )
            out, code, hung = p.stdout, p.returncode, False
        except subprocess.TimeoutExpired as e:
            out, code, hung = (e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""), None, True
        except OSError:
            return [_NO_CHILD] * len(items)
        if code == 5 or (out.startswith("__import__") and not hung):
            return [_NO_CHILD] * len(items)
        started, finished = None, set()
        for line in out.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if "start" in msg:
                started = msg["start"]
            elif "ok" in msg:
                finished.add(msg["ok"])
            elif "error" in msg:
                finished.add(msg["error"])
                results[todo[msg["error"]]] = f"the runtime cannot open it: {msg.get('why')}"
        if started is None:  # the child died before the first file: nothing attributable
            if code == 0:
                break
            return [_NO_CHILD] * len(items)
        if started in finished:  # every file it started, it finished
            if code == 0 or started == len(batch) - 1:
                break
            todo = todo[started + 1:]
            continue
        culprit = todo[started]
        if not hung and started > 0 and any(results[i] for i in todo[:started]):
            # an earlier file failed in this child and may have corrupted its memory: try this one alone
            todo = todo[started:]
            continue
        if hung:
            results[culprit] = f"opening and running it once did not finish within {timeout:.0f} s (the file hangs the runtime)"
        elif crashed(code):
            results[culprit] = f"opening it crashed the runtime ({signal_name(code or 0)}): the file is damaged or crafted"
        else:
            results[culprit] = f"opening it ended the runtime's process (exit {code}): the file is damaged or crafted"
        todo = todo[started + 1:]
    return results


def probe_model(path: str, fmt: str, opts: Optional[Dict[str, Any]] = None, timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """Why ``path`` cannot be opened and run safely here, or None (see probe_models)."""
    why = probe_models([(path, fmt, dict(opts or {}))], timeout)[0]
    return None if why == _NO_CHILD else why


def no_child(why: Optional[str]) -> bool:
    return why == _NO_CHILD

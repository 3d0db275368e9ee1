"""Wall time and size of `edgeship device emulate arm64`, cold (an empty folder) and warm, per generation.

Each cold run prepares into a fresh $EDGESHIP_EMULATED_DIR (Debian's arm64 packages through a private
apt root, the aarch64 wheels through pip, then one start of the emulated Python); each warm run finds
it and only starts it. qemu-user-static must already be installed (or run as root: it is apt-installed,
and that first install is not timed). --no-pip-cache makes pip download the wheels again, as on a fresh CI machine.
    python benchmarks/bench_emulate.py [--repeats 3] [--warm 3] [--no-pip-cache]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def emulate(folder: Path, numpy: str, env: dict) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "edgeship", "device", "emulate", "arm64", "--numpy", numpy, "--json", "-q"],
        capture_output=True, text=True, env={**env, "EDGESHIP_EMULATED_DIR": str(folder)},
    )  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"device emulate failed: {r.stderr.strip()[-500:]}")
    out = json.loads(r.stdout)
    out["wall_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="cold runs per generation")
    ap.add_argument("--warm", type=int, default=3, help="warm runs per generation")
    ap.add_argument("--no-pip-cache", action="store_true", help="PIP_NO_CACHE_DIR=1: download the wheels every time")
    args = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.no_pip_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    with tempfile.TemporaryDirectory(prefix="bench-emulate-") as tmp:
        emulate(Path(tmp) / "tools", "2", env)  # installs qemu if needed: not part of the figures
    print(f"edgeship device emulate arm64, pip cache {'off' if args.no_pip_cache else 'on'}; {os.cpu_count()} cores")
    for numpy in ("2", "1"):
        cold, warm, size = [], [], 0
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="bench-emulate-") as tmp:
                c = emulate(Path(tmp), numpy, env)
                cold.append(c["wall_s"])
                size = c["size_bytes"]
                for _ in range(args.warm):
                    w = emulate(Path(tmp), numpy, env)
                    assert w["cached"]
                    warm.append(w["wall_s"])
        print(
            f"numpy={numpy}: cold median {statistics.median(cold):.1f} s (runs: {', '.join(f'{x:.1f}' for x in cold)}), "
            f"warm median {statistics.median(warm):.1f} s over {len(warm)}, {size / (1 << 20):.0f} MiB"
        )


if __name__ == "__main__":
    main()

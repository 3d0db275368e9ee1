"""What checking a bundle costs before anything runs: the manifest loader (schema and containment of
every path), the sha256 of every file, and the OpenSSH signature check (two ssh-keygen calls).

Builds the sample arm64 bundle (cached model; `--bundle DIR` uses one you have), signs a copy with a
fresh ed25519 key, and prints the median of --repeats runs of each step, interleaved.
    python benchmarks/bench_bundle_checks.py [--bundle DIR] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="an existing bundle (default: build the sample arm64 one)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    from edgeship.runner import bundlefmt

    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        work = Path(tmp)
        if args.bundle:
            shutil.copytree(args.bundle, work / "b")
        else:
            from edgeship.build import run_build

            run_build(target="arm64", out=str(work / "b"), runs=3)
        key = work / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(key)], check=True)
        signers = work / "allowed_signers"
        signers.write_text("bench@example " + " ".join(key.with_suffix(".pub").read_text().split()[:2]) + "\n")
        b = str(work / "b")
        bundlefmt.sign(b, str(key))
        m = bundlefmt.load_manifest(b)
        size = sum(v["size"] for v in m["files"].values())
        steps = {
            f"load_manifest ({len(m['files'])} paths contained)": lambda: bundlefmt.load_manifest(b),
            f"sha256 + size of every file ({size / 1024:.0f} KiB)": lambda: bundlefmt.problems(b, m),
            "signature (ssh-keygen -Y find-principals + verify)": lambda: bundlefmt.verify_signature(b, m, str(signers)),
        }
        times = {k: [] for k in steps}
        for _ in range(args.repeats):
            for name, f in steps.items():
                t = time.perf_counter()
                f()
                times[name].append((time.perf_counter() - t) * 1000)
        print(f"{os.cpu_count()} cores; median of {args.repeats}, interleaved")
        for name, xs in times.items():
            print(f"  {name:<55} {statistics.median(xs):8.2f} ms")


if __name__ == "__main__":
    main()

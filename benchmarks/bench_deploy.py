"""Wall time of `edgeship deploy` to a real OpenSSH server on 127.0.0.1, with and without the
shared ssh connection (ControlMaster), in the same run.

Starts sshd with generated keys (tests/device_fixtures.py; apt-installs OpenSSH when missing, as
root) and a device venv with NumPy 2 + LiteRT + onnxruntime, builds the sample arm64 bundle, then
deploys it --repeats times each way.
    python benchmarks/bench_deploy.py [--repeats 5] [--runs 10]
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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10, help="timed runs per artifact on the device")
    args = ap.parse_args()

    from edgeship.bundle import host_facts
    from edgeship.build import run_build
    from tests.device_fixtures import VENV_REQUIREMENTS, ensure_venv, start_sshd

    py = ensure_venv(VENV_REQUIREMENTS["np2-litert-ort"])
    h = host_facts()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        bundle = run_build(target="arm64", out=str(t / "digits-arm64"), runs=10).bundle
        (t / "sshd").mkdir()
        with start_sshd(t / "sshd") as s:
            print(f"host: {h['cpu']} ({h['cores']} cores); device: ssh://127.0.0.1 (loopback), {py}")
            print(f"deploy of {bundle.name}: 4 artifacts, {args.runs} timed runs each, {args.repeats} repeats per mode")
            medians = {}
            for share in ("1", "0"):
                times = []
                for i in range(args.repeats):
                    b = t / f"copy-{share}-{i}" / bundle.name
                    shutil.copytree(bundle, b)
                    t0 = time.perf_counter()
                    r = subprocess.run(
                        [sys.executable, "-m", "edgeship", "deploy", str(b), "--device", f"ssh://{s.alias}?python={py}",
                         "--ssh-config", str(s.config), "--runs", str(args.runs), "-q"],
                        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "EDGESHIP_SSH_SHARE": share},
                    )
                    times.append(time.perf_counter() - t0)
                    if r.returncode != 0:
                        sys.exit(f"deploy failed: {r.stderr[-500:]}")
                medians[share] = statistics.median(times)
                label = "one shared connection" if share == "1" else "a connection per call"
                print(f"  {label:24} median {medians[share]:.2f} s   all {', '.join(f'{x:.2f}' for x in times)}")
            print(f"  shared / per call: {medians['1'] / medians['0']:.2f}x")


if __name__ == "__main__":
    main()

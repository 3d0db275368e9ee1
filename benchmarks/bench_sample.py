"""Size, latency and parity of the sample model's artifacts on this machine.

Prints, per artifact of a target (default arm64): size, p50/p90 latency (median over
repeats of the shared latency protocol, batch 1) and the p50 ratio to TFLite fp32
measured in the same run, plus training time and held-out accuracy.

    python benchmarks/bench_sample.py [--target arm64] [--repeats 5] [--runs 300] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="arm64")
    ap.add_argument("--repeats", type=int, default=5, help="independent latency measurements per artifact")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per measurement")
    ap.add_argument("--threads", type=int, default=None, help="default: the profile's, capped at this host's cores")
    ap.add_argument("--retrain", action="store_true", help="train the sample again to time training")
    args = ap.parse_args()

    from edgeship.build import host_threads, run_build, runner_options
    from edgeship.bundle import host_facts, library_versions
    from edgeship.runner.latency import measure
    from edgeship.targets import load_target

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_build(target=args.target, out=str(Path(tmp) / "b"), retrain=args.retrain, runs=20)
        build_s = time.perf_counter() - t0
        profile = load_target(args.target)
        threads = args.threads or host_threads(profile)
        feed = result.dataset.first(1)
        p50s: dict[str, list[float]] = {a.key: [] for a in result.artifacts}
        p90s: dict[str, list[float]] = {a.key: [] for a in result.artifacts}
        # interleave artifacts across repeats so drift on the machine hits them all alike
        for _ in range(args.repeats):
            for a in result.artifacts:
                lat = measure(str(a.path), feed, fmt=a.format, threads=threads, warmup=20, runs=args.runs,
                              keep_samples=False, **runner_options(profile, a.format))
                p50s[a.key].append(lat.p50_ms)
                p90s[a.key].append(lat.p90_ms)

    h = host_facts()
    libs = library_versions()
    tr = result.training or {}
    print(f"machine: {h['cpu']}, {h['cores']} cores, {h['machine']}, Python {h['python']}")
    print("stack: " + ", ".join(f"{k} {v}" for k, v in libs.items()))
    print(f"sample model: held-out accuracy {tr.get('test_accuracy', float('nan')):.4f} on {tr.get('test_samples')} images; "
          f"training {'(cached) ' if tr.get('cached') else ''}{tr.get('train_seconds')} s; whole build {build_s:.1f} s")
    print(f"target {args.target}: threads {threads}, batch 1, {args.repeats} repeats x {args.runs} runs, median of per-repeat p50/p90")
    base = statistics.median(p50s["tflite:fp32"]) if "tflite:fp32" in p50s else None
    print(f"{'artifact':<20}{'size KiB':>10}{'p50 ms':>10}{'p90 ms':>10}{'p50 / tflite fp32':>20}{'top-1 agree':>13}{'SNR dB':>9}")
    for a in result.artifacts:
        p50 = statistics.median(p50s[a.key])
        p90 = statistics.median(p90s[a.key])
        ratio = f"{p50 / base:.2f}x" if base else "n/a"
        o = result.parity[a.key].outputs[0]
        print(f"{a.filename:<20}{a.size / 1024:>10.1f}{p50:>10.4f}{p90:>10.4f}{ratio:>20}{o.top1_agreement:>13.4f}{o.snr_db:>9.1f}")


if __name__ == "__main__":
    main()

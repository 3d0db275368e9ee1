"""The zoo matrix: every model of tests/zoo.py built for x86_64 and arm64 through the real CLI.

Prints, per model x artifact: built or not (with the reason), parity (max abs / SNR, pass or the
failed check), p50 on this host and size; then the totals (models, artifacts built and lost, exit
codes, wall time of all builds). Builds run one after the other (no parallelism), so the total
is the zoo tier's time on this machine.

    python benchmarks/zoo.py [--only NAME ...] [--onnx2tf]

Models are made on first use and cached (tests/zoo.py). TFLite artifacts of ONNX and PyTorch
models need onnx2tf's environment (`edgeship setup onnx2tf`; --onnx2tf uses the test suite's
cached one): without it they are skipped, with the reason.
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests import zoo  # noqa: E402


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _parity(a: dict) -> str:
    o = a["parity"]["outputs"][0]
    txt = f"max|d| {o['max_abs']:.2g}, SNR {o['snr_db']:.0f} dB"
    return txt if a["parity"]["passed"] else f"{txt}; FAIL {'; '.join(a['parity']['failures'])[:90]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None, help="zoo model names (default: all)")
    ap.add_argument("--onnx2tf", action="store_true", help="use the cached onnx2tf environment of the tests for TFLite from ONNX/PyTorch")
    args = ap.parse_args()
    names = args.only or list(zoo.ZOO)
    env = {}
    if args.onnx2tf:
        from edgeship.convert import onnx2tf

        py = zoo.zoo_root().parent / f"onnx2tf-{onnx2tf.VERSION}" / "bin" / "python"
        if not py.exists():
            sys.exit(f"no onnx2tf environment at {py}: run the tests' onnx2tf fixture or `edgeship setup onnx2tf --into {py.parent.parent}`")
        env[onnx2tf.ENV_VAR] = str(py)
    t_make = time.perf_counter()
    for n in names:
        zoo.ensure(n)
    t_make = time.perf_counter() - t_make
    print(f"zoo: {len(names)} models, targets {', '.join(zoo.TARGETS)}; host {platform.machine()}, {os.cpu_count()} cores; "
          f"models made/cached in {t_make:.1f} s\n")
    codes = collections.Counter()
    built = lost = skipped = passed = 0
    total = cpu = 0.0
    violations = []
    print("| model | exit | wall s (cpu s) | target | artifact | result | parity | p50 ms | size |")
    print("|---|---:|---:|---|---|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            b = zoo.build(n, Path(tmp) / n, env=env)
            total += b.seconds
            cpu += b.cpu_seconds
            codes[b.returncode] += 1
            violations += [f"{n}: {v}" for v in zoo.contract_violations(b)]
            head = f"| {n} | {b.returncode} | {b.seconds:.1f} ({b.cpu_seconds:.1f}) |"
            if not b.reports:
                line = next((ln for ln in b.stderr.splitlines() if ln.startswith("error:")), b.stderr.strip()[-200:])
                print(f"{head} both | – | {line[:220]} | | | |")
                continue
            for t, rep in b.reports.items():
                for a in rep["artifacts"]:
                    built += 1
                    passed += a["passed"]
                    lat = a.get("latency") or {}
                    p50 = f"{lat['p50_ms']:.3f}" if lat.get("measured", True) and "p50_ms" in lat else "not measured"
                    print(f"{head} {t} | {a['key']} | {'pass' if a['passed'] else 'built, fails budget'} | {_parity(a)} | {p50} | {_size(a['size'])} |")
                    head = "| | | |"
                for f in rep.get("failed_artifacts", []):
                    lost += 1
                    print(f"{head} {t} | {f['key']} | NOT BUILT | {f['reason'][:200]} | | |")
                    head = "| | | |"
                for k, why in rep.get("skipped", {}).items():
                    skipped += 1
                    print(f"{head} {t} | {k} | skipped | {why[:120]} | | |")
                    head = "| | | |"
    print(
        f"\ntotals: {len(names)} models; exit codes {dict(sorted(codes.items()))}; artifacts built {built} "
        f"({passed} within budget), not built {lost}, skipped {skipped}; "
        f"builds took {total:.0f} s wall in all ({total / max(1, len(names)):.1f} s per model, both targets), "
        f"{cpu:.0f} s of CPU (user + system: about the wall time on an idle machine; more than one core only in the conversion libraries' threads)"
    )
    print("contract: " + ("kept by every model" if not violations else "BROKEN: " + "; ".join(violations)))


if __name__ == "__main__":
    main()

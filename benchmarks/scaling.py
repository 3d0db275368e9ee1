"""How builds scale with the model: wall time, peak memory of the process tree, stage breakdown.

Each build is a real `edgeship build` process (TensorFlow import and shutdown included); its
process tree's resident memory is sampled from /proc every 0.1 s (the largest of that and the
children's ru_maxrss is printed). The stages come from the bundle's report.json. Models are
`keras.applications` with weights=None and generated data (made once, untimed, into the cache):

    sample       the built-in digits model (real data)
    mobilenetv2  MobileNetV2 alpha 0.5 @160
    resnet50     ResNet50 @128
    resnet101    ResNet101 @128 (44.7 M parameters: 170 MiB fp32)

Each model is built for arm64 as shipped and for a profile of its own whose int8 SNR budget
(90 dB) no 8-bit model meets, so both int8 artifacts miss it and the per-layer diagnosis runs.
Then, interleaved in one run, medians of --reps: the warm sample build against a hand-written
script doing the same four conversions (TFLite fp32/int8, ONNX fp32/int8; no parity, timing or
reports), and `--target all` against `--target arm64`.

    python benchmarks/scaling.py [--models sample,mobilenetv2,resnet50,resnet101] [--reps 3] [--runs 20]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TIGHT = """# arm64 with an int8 SNR budget no 8-bit model meets: the per-layer diagnosis runs
extends = "arm64"
name = "arm64-tight"

[budgets.int8]
snr_db = 90.0
"""

MODELS = {
    "mobilenetv2": "keras.applications.MobileNetV2(input_shape=(160, 160, 3), alpha=0.5, weights=None)",
    "resnet50": "keras.applications.ResNet50(input_shape=(128, 128, 3), weights=None)",
    "resnet101": "keras.applications.ResNet101(input_shape=(128, 128, 3), weights=None)",
}

HANDWRITTEN = r'''
# The same four conversions as `edgeship build --target arm64` of the sample, written by hand.
import os, sys, tempfile
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, tensorflow as tf, keras, onnx, tf2onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

model = keras.models.load_model(sys.argv[1], compile=False)
out = sys.argv[2]
x = np.load(sys.argv[3])["x"].astype(np.float32)  # the sample's calibration images
spec = [tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name="image")]
fn = tf.function(lambda t: model(t, training=False), input_signature=spec)
conc = fn.get_concrete_function()
open(f"{out}/fp32.tflite", "wb").write(tf.lite.TFLiteConverter.from_concrete_functions([conc], model).convert())
c = tf.lite.TFLiteConverter.from_concrete_functions([conc], model)
c.optimizations = [tf.lite.Optimize.DEFAULT]
c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(128))
c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
c.inference_input_type = c.inference_output_type = tf.int8
open(f"{out}/int8.tflite", "wb").write(c.convert())
tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=f"{out}/fp32.onnx")
name = onnx.load(f"{out}/fp32.onnx").graph.input[0].name

class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter(x[i:i + 1] for i in range(len(x)))
    def get_next(self):
        v = next(self.it, None)
        return None if v is None else {name: v}

quantize_static(f"{out}/fp32.onnx", f"{out}/int8.onnx", Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                reduce_range=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
'''


def cache() -> Path:
    from edgeship.resources import cache_dir

    return cache_dir() / "bench-models"


def make_models(names: List[str]) -> Dict[str, Path]:
    """Save each keras.applications model once (untimed) as .keras in the cache."""
    out = {}
    for name in names:
        if name == "sample":
            continue
        path = cache() / f"{name}.keras"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            code = f"import keras; m = {MODELS[name]}; m.save({str(path) + '.tmp.keras'!r})"
            subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"})
            os.replace(str(path) + ".tmp.keras", path)
        out[name] = path
    return out


def sample_model(into: Path) -> Tuple[Path, Path]:
    """(the cached sample .keras, an .npz of its calibration images) for the hand-written script."""
    import numpy as np

    from edgeship.train import train_sample

    _, ds, metrics = train_sample("digits")
    np.savez(into / "calibration.npz", x=next(iter(ds.calibration.values())))
    return Path(metrics["cache_path"]), into / "calibration.npz"


def run_measured(cmd: List[str]) -> Tuple[float, float, int]:
    """(wall s, peak MiB of the process tree, exit code) of ``cmd``."""
    from edgeship.measure import tree_rss

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode not in (0, 1):
        print(f"  ! {' '.join(cmd[-6:])}: exit {proc.returncode}: {err.strip().splitlines()[-1:] }", flush=True)
    return wall, peak / 2**20, proc.returncode


CHECKOUTS: List[Tuple[str, str]] = []  # (label, folder): --compare-with adds an older checkout


def build_cmd(model: str, target: str, out: Path, runs: int, checkout: str = "") -> List[str]:
    pre = ["env", f"PYTHONPATH={checkout}"] if checkout else []
    cmd = pre + [sys.executable, "-m", "edgeship", "build", "--target", target, "--out", str(out), "--runs", str(runs), "-q"]
    return cmd + ([] if model == "sample" else ["--model", model])


def stages(bundle: Path) -> str:
    try:
        b = json.loads((bundle / "report.json").read_text())["build"]
    except (OSError, KeyError, ValueError):
        return "no report"
    top = sorted(b["by_stage"].items(), key=lambda kv: -kv[1])
    out = ", ".join(f"{k} {v:.1f}" for k, v in top)
    peaks = [s for s in b["steps"] if "peak_rss_mb" in s]
    if peaks:
        worst = max(peaks, key=lambda s: s["peak_rss_mb"])
        out += f"; largest step peak: {worst['step']} {worst['peak_rss_mb']:.0f} MiB"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="sample,mobilenetv2,resnet50,resnet101")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions for the ratios")
    ap.add_argument("--runs", type=int, default=20, help="timed latency runs per artifact")
    ap.add_argument("--profiles", default="arm64,tight", help="arm64 (as shipped), tight (int8 budget missed: diagnosis)")
    ap.add_argument("--no-ratios", action="store_true")
    ap.add_argument("--no-sizes", action="store_true")
    ap.add_argument("--compare-with", default="", metavar="DIR",
                    help="another edgeship checkout (e.g. `git archive main`): each build runs with it too, interleaved")
    args = ap.parse_args()
    from edgeship.bundle import host_facts

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    paths = make_models(names)
    h = host_facts()
    load = os.getloadavg()
    print(f"machine: {h['cpu']}, {h['cores']} cores; load average at start {load[0]:.1f} (other work shares it)")
    with tempfile.TemporaryDirectory(prefix="edgeship-scaling-") as tmp:
        t = Path(tmp)
        (t / "tight.toml").write_text(TIGHT)
        if not args.no_sizes:
            checkouts = [("", "this")] + ([(args.compare_with, "other")] if args.compare_with else [])
            print(f"{'model':<12} {'profile':<12} {'code':<6} {'exit':>4} {'wall s':>7} {'peak MiB':>9}  stages (s, largest first)")
            for name in names:
                model = "sample" if name == "sample" else str(paths[name])
                profiles = {"arm64": "arm64", "tight": str(t / "tight.toml")}
                for prof in [profiles[p.strip()] for p in args.profiles.split(",")]:
                    for checkout, which in checkouts:  # interleaved: the same load for both
                        out = t / f"{name}-{Path(prof).stem}"
                        wall, peak, code = run_measured(build_cmd(model, prof, out, args.runs, checkout))
                        label = "arm64" if prof == "arm64" else "arm64-tight"
                        print(f"{name:<12} {label:<12} {which:<6} {code:>4} {wall:>7.1f} {peak:>9.0f}  {stages(out)}", flush=True)
                        shutil.rmtree(out, ignore_errors=True)
        if args.no_ratios:
            return
        sample, calib = sample_model(t)
        script = t / "handwritten.py"
        script.write_text(HANDWRITTEN)
        times: Dict[str, List[float]] = {"edgeship arm64": [], "hand-written": [], "edgeship all": []}
        if args.compare_with:
            times.update({"other arm64": [], "other all": []})
        subprocess.run(build_cmd("sample", "arm64", t / "warm", args.runs), capture_output=True)  # warm caches
        shutil.rmtree(t / "warm", ignore_errors=True)
        for _ in range(args.reps):  # interleaved: load changes hit all three alike
            for what, cmd in (
                ("edgeship arm64", build_cmd("sample", "arm64", t / "a", args.runs)),
                ("hand-written", [sys.executable, str(script), str(sample), str(t / "h"), str(calib)]),
                ("edgeship all", build_cmd("sample", "all", t / "all", args.runs)),
            ) + ((
                ("other arm64", build_cmd("sample", "arm64", t / "a", args.runs, args.compare_with)),
                ("other all", build_cmd("sample", "all", t / "all", args.runs, args.compare_with)),
            ) if args.compare_with else ()):
                (t / "h").mkdir(exist_ok=True)
                wall, _, code = run_measured(cmd)
                times[what].append(wall)
                for d in ("a", "h", "all"):
                    shutil.rmtree(t / d, ignore_errors=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"warm sample, medians of {args.reps} interleaved runs:")
        for k, v in times.items():
            print(f"  {k:<16} {med[k]:6.2f} s  ({', '.join(f'{x:.2f}' for x in v)})")
        print(f"  edgeship arm64 / hand-written script: {med['edgeship arm64'] / med['hand-written']:.2f}x")
        print(f"  --target all / --target arm64: {med['edgeship all'] / med['edgeship arm64']:.2f}x")
        if args.compare_with:
            print(f"  other checkout: arm64 / hand-written {med['other arm64'] / med['hand-written']:.2f}x, "
                  f"all / arm64 {med['other all'] / med['other arm64']:.2f}x")


if __name__ == "__main__":
    main()

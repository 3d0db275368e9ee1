"""The on-device runner, run as the bundle's zipapp in minimal venvs without TensorFlow.

Two device-like environments (tests/device_fixtures.py): NumPy 1 + tflite-runtime 2.14 (what many
Raspberry Pi images carry) and NumPy 2 + ai-edge-litert + onnxruntime. The runner's parity outputs
there must match what the host computed in the build.
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER_SRC = ROOT / "edgeship" / "runner"


def run_pyz(python: Path | str, bundle: Path, *args: str, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python BUNDLE/edgeship-runner.pyz ARGS`` as a user on the device types it."""
    import os

    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGESHIP_TFLITE_BACKEND")}
    full_env.update(env or {})
    return subprocess.run(
        [str(python), str(bundle / "edgeship-runner.pyz"), *args], capture_output=True, text=True, timeout=300, env=full_env, cwd=bundle
    )


@pytest.fixture(scope="module")
def bundle(arm64_build: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the arm64 bundle (tests here write outputs and tamper with files)."""
    dest = tmp_path_factory.mktemp("runner") / "digits-arm64"
    shutil.copytree(arm64_build.bundle, dest)
    return dest


def host_outputs(bundle: Path, artifact: str) -> np.ndarray:
    with np.load(bundle / "parity" / f"host_{artifact}.npz") as z:
        return z[z.files[0]]


def device_outputs(folder: Path, artifact: str) -> np.ndarray:
    with np.load(folder / f"outputs_{artifact}.npz") as z:
        return z[z.files[0]]


# --------------------------------------------------------------------------- source rules


def test_runner_source_is_python39_and_imports_only_numpy_and_runtimes() -> None:
    allowed = {"numpy", "cv2", "onnxruntime", "resource"} | set(sys.stdlib_module_names)
    for f in sorted(RUNNER_SRC.glob("*.py")):
        tree = ast.parse(f.read_text(), filename=str(f), feature_version=(3, 9))  # no match statements etc.
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module or ""]
            else:
                continue
            for n in names:
                # serve.py alone may import its optional HTTP server (an extra install for `serve` only)
                ok = allowed | ({"uvicorn", "starlette"} if f.name == "serve.py" else set())
                assert n.split(".")[0] in ok, f"{f.name} imports {n}: the runner may use only NumPy and a runtime"
        # annotations must stay strings on 3.9 (X | Y, list[int] would fail at import there)
        if any(isinstance(n, ast.AnnAssign) or isinstance(n, ast.FunctionDef) for n in ast.walk(tree)):
            assert "from __future__ import annotations" in f.read_text(), f.name
    py39 = shutil.which("python3.9")
    if py39 and subprocess.run([py39, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"], capture_output=True).returncode == 0:
        r = subprocess.run([py39, "-m", "py_compile", *map(str, RUNNER_SRC.glob("*.py"))], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- device venvs


@pytest.mark.parametrize("venv", ["np1-tflite-runtime", "np2-litert-ort"])
def test_runner_in_minimal_venv_matches_host(venv: str, device_venvs: Dict[str, Path], bundle: Path, tmp_path: Path) -> None:
    python = device_venvs[venv]
    tf = subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True)
    assert tf.returncode != 0, "the device venv must not have TensorFlow"

    r = run_pyz(python, bundle, "check")
    check = json.loads(r.stdout)
    facts = check["device"]
    for key in ("machine", "cpu", "cores", "memory_mb", "os", "python", "numpy"):
        assert facts[key], key
    assert facts["numpy"].startswith("1." if venv.startswith("np1") else "2.")
    tflite = check["runtimes"]["tflite"]
    assert tflite["available"] and tflite["runtime"] == ("tflite-runtime" if venv.startswith("np1") else "ai-edge-litert")
    runnable = [a["artifact"] for a in check["artifacts"] if a["can_run"]]
    if venv.startswith("np1"):  # no onnxruntime there: said, with the line that installs it
        assert r.returncode == 4
        assert runnable == ["model_int8.tflite", "model_fp32.tflite"]
        assert check["install"] == ["python3 -m pip install onnxruntime"]
    else:
        assert r.returncode == 0, r.stderr
        assert len(runnable) == 4

    out = tmp_path / "out"
    args = [x for a in runnable for x in ("--artifact", a)]
    r = run_pyz(python, bundle, "parity", "--out", str(out), *args)
    assert r.returncode == 0, r.stderr
    for art in runnable:
        dev, host = device_outputs(out, art), host_outputs(bundle, art)
        assert dev.shape == host.shape == (359, 10)
        # same runtime version as the host (LiteRT 2.3, ORT 1.31): bit-identical; any runtime: same classes
        np.testing.assert_array_equal(dev.argmax(1), host.argmax(1))
        if "fp32" in art:
            np.testing.assert_allclose(dev, host, atol=1e-5)
        elif venv.startswith("np2"):
            np.testing.assert_array_equal(dev, host)
        else:
            # tflite-runtime 2.14's int8 kernels round a few requantizations differently from LiteRT 2.3
            # (measured: 7 of 3590 values, at most 12 steps of 1/256): near-identical, never another class.
            assert np.mean(dev == host) >= 0.99

    r = run_pyz(python, bundle, "bench", "--runs", "15", "--warmup", "3", "--threads", "1", "--artifact", runnable[0])
    assert r.returncode == 0, r.stderr
    lat = json.loads(r.stdout)["latency"][0]
    assert lat["runs"] == 15 and lat["threads"] == 1 and len(lat["samples_ms"]) == 15
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["load_ms"] > 0 and lat["peak_rss_mb"] > 0
    assert lat["backend"].startswith(tflite["runtime"])


def test_bench_time_budget_stops_early(device_venvs: Dict[str, Path], bundle: Path) -> None:
    r = run_pyz(device_venvs["np2-litert-ort"], bundle, "bench", "--seconds", "0.05", "--runs", "1000000", "--no-samples", "--artifact", "onnx:fp32")
    assert r.returncode == 0, r.stderr
    lat = json.loads(r.stdout)["latency"][0]
    assert 10 <= lat["runs"] < 1000000 and lat["samples_ms"] == []


# --------------------------------------------------------------------------- refusals and missing pieces


@pytest.mark.parametrize("damage", ["tamper", "truncate"])
def test_tampered_or_truncated_artifact_is_refused_by_name(damage: str, device_venvs: Dict[str, Path], bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    target = copy / "artifacts" / "model_fp32.tflite"
    data = bytearray(target.read_bytes())
    if damage == "tamper":
        data[len(data) // 2] ^= 0xFF  # same size, one flipped byte in the weights
    else:
        data = data[: len(data) // 2]
    target.write_bytes(bytes(data))
    out = tmp_path / "out"
    r = run_pyz(device_venvs["np2-litert-ort"], copy, "parity", "--out", str(out))
    assert r.returncode == 1
    assert "refusing artifacts/model_fp32.tflite" in r.stderr and "Traceback" not in r.stderr
    assert not list(out.glob("*.npz")), "nothing runs before every chosen artifact is verified"
    # the untouched artifacts still run when chosen alone
    assert run_pyz(device_venvs["np2-litert-ort"], copy, "parity", "--out", str(out), "--artifact", "tflite:int8").returncode == 0


def test_check_opens_each_artifact(device_venvs: Dict[str, Path], bundle: Path, tmp_path: Path) -> None:
    """A file the installed runtime cannot load (here: bytes that are no model, listed with their true
    sha256 so only the runtime can object) is reported as not runnable and refused (exit 1): the file
    is damaged, so the line says so and never advises upgrading the runtime (issue 10)."""
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    bad = copy / "artifacts" / "model_fp32.tflite"
    bad.write_bytes(b"TFL3" + bytes(range(256)) * 8)
    manifest = json.loads((copy / "manifest.json").read_text())
    import hashlib

    manifest["files"]["artifacts/model_fp32.tflite"] = {"sha256": hashlib.sha256(bad.read_bytes()).hexdigest(), "size": bad.stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    r = run_pyz(device_venvs["np2-litert-ort"], copy, "check")
    assert r.returncode == 1, r.stderr
    assert "error: model_fp32.tflite cannot run here" in r.stderr
    arts = {a["artifact"]: a for a in json.loads(r.stdout)["artifacts"]}
    assert arts["model_int8.tflite"]["can_run"] and arts["model_int8.tflite"]["opened"]
    fp32 = arts["model_fp32.tflite"]
    assert not fp32["can_run"] and "cannot open it" in fp32["reason"] and "damaged" in fp32["reason"]
    assert fp32["install"] is None


def test_accelerator_absent_on_the_device_is_not_measured(device_venvs: Dict[str, Path], bundle: Path, tmp_path: Path) -> None:
    """A profile naming a GPU delegate / CUDA provider: on a CPU-only device, latency is 'not measured'
    with the reason, never a CPU time passed off as the GPU's; parity still runs, on the CPU, and says so."""
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target"]["runtime"].update(tflite_delegates=["gpu"], onnx_providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    py = device_venvs["np2-litert-ort"]
    r = run_pyz(py, copy, "bench", "--runs", "5", "--artifact", "tflite:fp32", "--artifact", "onnx:fp32")
    assert r.returncode == 0, r.stderr
    lat = json.loads(r.stdout)["latency"]
    assert [x["measured"] for x in lat] == [False, False] and [x["runs"] for x in lat] == [0, 0]
    assert "TFLite gpu delegate not available on this device" in lat[0]["reason"]
    assert "CUDAExecutionProvider not available on this device" in lat[1]["reason"]
    r = run_pyz(py, copy, "parity", "--out", str(tmp_path / "o"), "--artifact", "onnx:fp32")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["parity_outputs"][0]["note"].startswith("ran on the CPU: CUDAExecutionProvider not available")


def test_missing_runtime_gets_the_install_line(device_venvs: Dict[str, Path], bundle: Path, tmp_path: Path) -> None:
    py = device_venvs["np1-tflite-runtime"]
    r = run_pyz(py, bundle, "parity", "--out", str(tmp_path), "--artifact", "onnx:int8")
    assert r.returncode == 4 and "python3 -m pip install onnxruntime" in r.stderr and "Traceback" not in r.stderr
    r = run_pyz(py, bundle, "bench", "--artifact", "tflite:int8", env={"EDGESHIP_TFLITE_BACKEND": "ai-edge-litert"})
    assert r.returncode == 4 and "pip install ai-edge-litert" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- predict


def write_digit_pngs(bundle: Path, folder: Path, n: int = 40) -> List[tuple]:
    """Held-out digits (real handwriting the model never trained on) saved as image files the way a
    user would have them: 32x32 like the original UCI bitmaps, some dark-on-light and in colour."""
    import cv2

    folder.mkdir()
    with np.load(bundle / "parity" / "inputs.npz") as z:
        images, labels = z["image"][:n, :, :, 0], z["__labels__"][:n]
    files = []
    for i, (img, label) in enumerate(zip(images, labels)):
        px = np.round(img * 255).astype(np.uint8)
        big = cv2.resize(px, (32, 32), interpolation=cv2.INTER_NEAREST)
        if i % 3 == 1:
            big = 255 - big  # ink on paper: the recorded preprocessing inverts light backgrounds
        if i % 3 == 2:
            big = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)  # a colour file: converted to gray first
        path = folder / f"digit{i:02d}_label{label}.png"
        cv2.imwrite(str(path), big)
        files.append((path, int(label)))
    return files


def test_predict_classifies_real_digit_images(bundle: Path, tmp_path: Path) -> None:
    files = write_digit_pngs(bundle, tmp_path / "imgs")
    # the host environment has OpenCV and LiteRT: the same zipapp a device runs
    r = run_pyz(sys.executable, bundle, "predict", *[str(p) for p, _ in files], "--json", "-", "--top", "3")
    assert r.returncode == 0, r.stderr
    preds = json.loads(r.stdout)["predictions"]
    assert [p["image"] for p in preds] == [str(p) for p, _ in files]
    correct = sum(p["top"][0]["label"] == str(label) for p, (_, label) in zip(preds, files))
    assert correct >= 38, f"{correct}/40 right"  # the model is ~99% accurate on these held-out digits
    assert all(len(p["top"]) == 3 and p["top"][0]["score"] >= p["top"][1]["score"] for p in preds)
    # the plain text form names each file and its top classes with labels
    r = run_pyz(sys.executable, bundle, "predict", str(files[0][0]), "--artifact", "onnx:fp32", "--top", "2")
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith(f"{files[0][0]}: {files[0][1]} (") and line.count("%") == 2


def test_predict_without_opencv_says_so(device_venvs: Dict[str, Path], bundle: Path, tmp_path: Path) -> None:
    img = tmp_path / "x.png"
    img.write_bytes(b"not read")
    r = run_pyz(device_venvs["np1-tflite-runtime"], bundle, "predict", str(img))
    assert r.returncode == 4
    assert "OpenCV is not installed" in r.stderr and "pip install opencv-python-headless" in r.stderr


def test_predict_bad_inputs(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    r = run_pyz(sys.executable, bundle, "predict", str(bad))
    assert r.returncode == 2 and f"cannot read {bad}" in r.stderr and "Traceback" not in r.stderr
    r = run_pyz(sys.executable, bundle, "predict", "--camera", "7", "--frames", "1")
    assert r.returncode == 4 and "camera 7 could not be opened" in r.stderr


def test_emulation_is_recognised_from_cpuinfo() -> None:
    from edgeship.runner.cli import emulation

    x86 = {"vendor_id": "AuthenticAMD", "model name": "AMD EPYC", "flags": "fpu sse avx2"}
    pi = {"cpu implementer": "0x41", "cpu part": "0xd08", "features": "fp asimd"}
    assert emulation("aarch64", x86) == "aarch64 code emulated on AMD EPYC (qemu-user or similar)"
    assert emulation("x86_64", pi) is not None
    assert emulation("aarch64", pi) is None and emulation("x86_64", x86) is None and emulation("armv7l", {}) is None

"""`edgeship-runner.pyz serve` on loopback, in a device-like venv (NumPy, LiteRT, onnxruntime, uvicorn,
Starlette, OpenCV; no TensorFlow, no edgeship), called by Triton's own v2 client from a second venv.

The served outputs must equal the runner's own `parity` outputs on the same inputs, and every bad
request must be a 4xx with {"error": ...} while the server keeps serving.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest

from tests.device_fixtures import CLIENT_REQUIREMENTS, SERVE_REQUIREMENTS, ensure_venv, free_port, stop
from tests.test_runner import run_pyz, write_digit_pngs

CLIENT = Path(__file__).with_name("serve_client.py")


@pytest.fixture(scope="module")
def bundle(arm64_build: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("serve") / "digits-arm64"
    shutil.copytree(arm64_build.bundle, dest)
    return dest


@pytest.fixture(scope="module")
def serve_python() -> Path:
    return ensure_venv(SERVE_REQUIREMENTS)


@pytest.fixture(scope="module")
def client_python() -> Path:
    return ensure_venv(CLIENT_REQUIREMENTS)


@contextlib.contextmanager
def serving(python: Path, bundle: Path, *args: str, env: Optional[Dict[str, str]] = None) -> Iterator[Tuple[int, subprocess.Popen, List[str]]]:
    """`serve` on 127.0.0.1:<free port> until ready; yields (port, process, startup lines)."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGESHIP_TFLITE_BACKEND", "EDGESHIP_SERVE_TOKEN")}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [str(python), str(bundle / "edgeship-runner.pyz"), "serve", str(bundle), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=bundle,
    )
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            try:
                if call(port, "GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "serve did not become ready in 60 s"
            time.sleep(0.2)
        yield port, proc, []
    finally:
        stop(proc, 10)


def startup_line(proc: subprocess.Popen) -> str:
    """serve's own 'serving ...' line (stderr, after the server stopped)."""
    err = proc.stderr.read() if proc.stderr else ""
    return next((ln for ln in err.splitlines() if ln.startswith("serving ")), err)


def call(port: int, method: str, path: str, body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data
    finally:
        c.close()


def tensor_request(x: np.ndarray, name: str = "image", datatype: str = "FP32", shape: Optional[List[int]] = None) -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape or list(x.shape), "data": x.ravel().tolist()}]}).encode()


def triton(client_python: Path, port: int, inputs: Path, out: Path, *args: str) -> Tuple[int, Dict[str, Any], Dict[str, np.ndarray]]:
    r = subprocess.run([str(client_python), str(CLIENT), f"127.0.0.1:{port}", "digits", str(inputs), str(out), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 3), r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    outs: Dict[str, np.ndarray] = {}
    if r.returncode == 0:
        with np.load(out) as z:
            outs = {k: z[k] for k in z.files}
    return r.returncode, info, outs


def parity_outputs(python: Path, bundle: Path, artifact: str, out: Path) -> np.ndarray:
    r = run_pyz(python, bundle, "parity", str(bundle), "--artifact", artifact, "--out", str(out))
    assert r.returncode == 0, r.stderr
    with np.load(out / f"outputs_{artifact}.npz") as z:
        return z["probs"]


@pytest.mark.slow
def test_tritonclient_metadata_and_inference_equal_the_runners_parity(serve_python: Path, client_python: Path, bundle: Path, tmp_path: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    first = next(a for a in manifest["artifacts"] if a["passed"])  # all runtimes are in the serve venv
    expected = parity_outputs(serve_python, bundle, first["path"], tmp_path / "parity")
    inputs = bundle / "parity" / "inputs.npz"
    with serving(serve_python, bundle) as (port, proc, _):
        # binary tensor data (tritonclient's default), 8 samples a request, 4 requests in flight
        code, info, outs = triton(client_python, port, inputs, tmp_path / "bin.npz", "--chunk", "8", "--concurrency", "4")
        assert code == 0, info
        assert info["live"] and info["ready"] and info["model_ready"]
        meta = info["metadata"]
        assert meta["name"] == "digits"
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
        assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
        assert meta["edgeship"]["artifact"] == first["file"]
        assert "passed parity on the host" in meta["edgeship"]["chosen"]
        np.testing.assert_array_equal(outs["probs"], expected)
        # JSON tensors, one sample a request
        code, _, outs = triton(client_python, port, inputs, tmp_path / "json.npz", "--json")
        assert code == 0
        np.testing.assert_array_equal(outs["probs"], expected)
    line = startup_line(proc)
    assert first["file"] in line and "127.0.0.1" in line


@pytest.mark.slow
def test_onnx_artifact_with_dynamic_batching_equals_parity(serve_python: Path, client_python: Path, bundle: Path, tmp_path: Path) -> None:
    expected = parity_outputs(serve_python, bundle, "model_fp32.onnx", tmp_path / "parity")
    with serving(serve_python, bundle, "--artifact", "onnx:fp32", "--batch-ms", "5") as (port, proc, _):
        code, info, outs = triton(client_python, port, bundle / "parity" / "inputs.npz", tmp_path / "o.npz", "--chunk", "3", "--concurrency", "16")
        assert code == 0, info
        assert info["metadata"]["edgeship"]["batching"]["on"] is True
        assert info["metadata"]["edgeship"]["artifact"] == "artifacts/model_fp32.onnx"
        # requests that shared an invoke get their own rows back, in order (batch composition may move the last bits)
        np.testing.assert_allclose(outs["probs"], expected, rtol=0, atol=1e-6)
        served = call(port, "GET", "/v2/models/digits")[1]["edgeship"]["served"]
        assert served["requests"] == 120 and served["invokes"] < served["requests"], served  # requests did share invokes
    assert "batching 5 ms window" in startup_line(proc)


@pytest.mark.slow
def test_bad_requests_are_4xx_and_the_server_keeps_serving(serve_python: Path, bundle: Path) -> None:
    with np.load(bundle / "parity" / "inputs.npz") as z:
        x = z["image"][:2].astype(np.float32)
    good = tensor_request(x)
    infer = "/v2/models/digits/infer"
    head = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8, 1], "parameters": {"binary_data_size": 256}}]}).encode()
    bad: List[Tuple[str, str, bytes, Dict[str, str], int, str]] = [
        ("malformed JSON", infer, b'{"inputs": [', {}, 400, "not valid JSON"),
        ("deeply nested", infer, b"[" * 200_000, {}, 400, "nested too deeply"),
        ("not an object", infer, b"[1, 2]", {}, 400, '"inputs" list'),
        ("wrong shape", infer, tensor_request(x.reshape(2, 64, 1, 1)), {}, 400, "the model takes [N, 8, 8, 1]"),
        ("too few values", infer, tensor_request(x[:1], shape=[2, 8, 8, 1]), {}, 400, "64 values for shape [2, 8, 8, 1]"),
        ("wrong datatype", infer, tensor_request(x, datatype="INT8"), {}, 400, "the model takes FP32"),
        ("not numbers", infer, json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8, 1], "data": ["a"] * 64}]}).encode(), {}, 400, "must be numbers"),
        ("unknown input", infer, tensor_request(x, name="pixels"), {}, 400, "unknown input 'pixels'"),
        ("unknown output", infer, json.dumps({**json.loads(good), "outputs": [{"name": "logits"}]}).encode(), {}, 400, "unknown output(s) logits"),
        ("binary size lies", infer, head + b"\0" * 10, {"Inference-Header-Content-Length": str(len(head))}, 400, "holds 10 binary bytes, not 256"),
        ("binary header lies", infer, head, {"Inference-Header-Content-Length": "99999"}, 400, "outside the body"),
        ("oversized body", infer, b"{" + b" " * (2 << 20) + b"}", {}, 413, "over the limit"),
        ("unknown model", "/v2/models/cats/infer", good, {}, 404, "unknown model 'cats'"),
        ("unknown version", "/v2/models/digits/versions/7/infer", good, {}, 404, "unknown version"),
        ("unknown endpoint", "/v2/models/digits/train", good, {}, 404, "no such endpoint"),
    ]
    with serving(serve_python, bundle, "--max-body-mb", "1") as (port, proc, _):
        for what, path, body, headers, status, message in bad:
            code, reply = call(port, "POST", path, body, headers)
            assert code == status, (what, code, reply)
            assert isinstance(reply, dict) and message in reply["error"], (what, reply)
            assert proc.poll() is None, what
            code, reply = call(port, "POST", infer, good)
            assert code == 200 and np.asarray(reply["outputs"][0]["data"]).shape == (20,), what
        code, reply = call(port, "GET", "/v2/models/cats")
        assert code == 404 and "unknown model" in reply["error"]
        code, reply = call(port, "GET", "/v2/models/digits/infer")
        assert 400 <= code < 500 and "error" in reply


@pytest.mark.slow
def test_bearer_token(serve_python: Path, client_python: Path, bundle: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with np.load(bundle / "parity" / "inputs.npz") as z:
        np.savez(tmp_path / "two.npz", image=z["image"][:2])
    with serving(serve_python, bundle, "--token-file", str(token_file)) as (port, proc, _):
        assert call(port, "GET", "/v2/health/ready")[0] == 200  # probes need no token
        code, reply = call(port, "POST", "/v2/models/digits/infer", tensor_request(np.zeros((1, 8, 8, 1), np.float32)))
        assert code == 401 and "bearer token" in reply["error"]
        assert call(port, "GET", "/v2/models/digits", headers={"Authorization": "Bearer wrong"})[0] == 401
        code, info, _ = triton(client_python, port, tmp_path / "two.npz", tmp_path / "o.npz")
        assert code == 3 and info["status"] == "401"
        code, info, outs = triton(client_python, port, tmp_path / "two.npz", tmp_path / "o.npz", "--token", "s3cret-token")
        assert code == 0 and outs["probs"].shape == (2, 10)
    assert "token required" in startup_line(proc)


@pytest.mark.slow
def test_image_endpoint_uses_the_manifests_preprocessing(serve_python: Path, bundle: Path, tmp_path: Path) -> None:
    files = write_digit_pngs(bundle, tmp_path / "imgs")
    with serving(serve_python, bundle) as (port, proc, _):
        right = 0
        for path, label in files:
            code, reply = call(port, "POST", "/edgeship/v1/models/digits/classify?top=2", path.read_bytes(), {"Content-Type": "image/png"})
            assert code == 200, reply
            assert len(reply["top"]) == 2
            right += reply["top"][0]["label"] == str(label)
        assert right >= 38, f"{right}/40 right"
        code, reply = call(port, "POST", "/edgeship/v1/models/digits/classify", b"not an image")
        assert code == 400 and "not an image file" in reply["error"]
        assert call(port, "GET", "/v2/health/live")[0] == 200


@pytest.mark.slow
def test_check_says_whether_serve_can_run(device_venvs: Dict[str, Path], serve_python: Path, bundle: Path, tmp_path: Path) -> None:
    r = run_pyz(device_venvs["np2-litert-ort"], bundle, "check", str(bundle), "--json", str(tmp_path / "c.json"))
    assert r.returncode == 0, r.stderr  # serve is optional: its absence never fails the check
    st = json.loads((tmp_path / "c.json").read_text())["serve"]
    assert st["available"] is False and st["install"] == "python3 -m pip install uvicorn starlette"
    r = run_pyz(device_venvs["np2-litert-ort"], bundle, "serve", str(bundle))
    assert r.returncode == 4 and "pip install uvicorn starlette" in r.stderr and "Traceback" not in r.stderr
    r = run_pyz(serve_python, bundle, "check", str(bundle))
    assert r.returncode == 0 and json.loads(r.stdout)["serve"] == {"available": True, "uvicorn": "0.54.0", "starlette": "1.10.0"}


@pytest.mark.slow
def test_install_service_prints_the_unit_and_writes_it_only_with_yes(serve_python: Path, bundle: Path, tmp_path: Path) -> None:
    units = tmp_path / "units"
    r = run_pyz(serve_python, bundle, "serve", str(bundle), "--install-service", "--port", "8123", "--unit-dir", str(units))
    assert r.returncode == 0, r.stderr
    assert "[Service]" in r.stdout and f"edgeship-runner.pyz serve {bundle} --host 127.0.0.1 --port 8123" in r.stdout
    assert "Restart=on-failure" in r.stdout and "WantedBy=multi-user.target" in r.stdout
    assert not units.exists() and "--yes" in r.stderr
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs here: --yes would start a real service")
    r = run_pyz(serve_python, bundle, "serve", str(bundle), "--install-service", "--yes", "--unit-dir", str(units))
    assert (units / "edgeship-serve-digits.service").read_text() in r.stdout
    assert r.returncode == 4 and "systemd is not running here" in r.stderr


@pytest.mark.slow
def test_serve_bad_arguments(serve_python: Path, bundle: Path, tmp_path: Path) -> None:
    r = run_pyz(serve_python, bundle, "serve", str(bundle), "--artifact", "nope.tflite")
    assert r.returncode == 2 and "no artifact nope.tflite" in r.stderr
    r = run_pyz(serve_python, bundle, "serve", str(bundle), "--token-file", str(tmp_path / "missing"))
    assert r.returncode == 2 and "cannot read --token-file" in r.stderr
    r = run_pyz(serve_python, bundle, "serve", str(bundle), "--port", "70000")
    assert r.returncode == 2 and "--port: 70000 is not in [1, 65535]" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_deploy_serve_starts_it_on_the_device_and_checks_health(kind: str, serve_python: Path, bundle: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from tests.conftest import run_cli

    port = free_port()
    remote = tmp_path / "device"
    remote.mkdir()
    b = tmp_path / "b" / bundle.name
    shutil.copytree(bundle, b)
    if kind == "ssh":  # the real OpenSSH server on loopback: the background server must not hold the session open
        sshd = request.getfixturevalue("sshd")
        where = [f"ssh://{sshd.alias}?python={serve_python}", "--ssh-config", str(sshd.config)]
    else:
        where = [f"local:{serve_python}"]
    r = run_cli("deploy", str(b), "--device", *where, "--runs", "5", "--remote-dir", str(remote), "--serve", "--serve-port", str(port), "-q", timeout=300)
    report = json.loads((b / "report.json").read_text())
    sv = report["devices"][0].get("serve") or {}
    try:
        assert r.returncode == 0, r.stderr
        assert f"serving artifacts/model_int8.tflite at http://127.0.0.1:{port}/v2/models/digits on the device" in r.stdout
        assert sv["ready"] is True
        if not os.path.isdir("/run/systemd/system"):
            assert sv["service"] is None and "stops at reboot" in sv["note"] and "--install-service --yes" in sv["note"]
        code, meta = call(port, "GET", "/v2/models/digits")
        assert code == 200 and meta["edgeship"]["bundle"].startswith(str(remote))
        with np.load(bundle / "parity" / "inputs.npz") as z:
            code, reply = call(port, "POST", "/v2/models/digits/infer", tensor_request(z["image"][:1].astype(np.float32)))
        assert code == 200 and len(reply["outputs"][0]["data"]) == 10
    finally:
        if sv.get("pid"):
            os.kill(sv["pid"], 15)


def test_the_shipped_artifact_is_chosen_as_the_manifest_says() -> None:
    from edgeship.runner.cli import RunnerError
    from edgeship.runner.serve import choose_artifact

    arts = [
        {"format": "tflite", "recipe": "int8", "path": "model_int8.tflite", "key": "tflite:int8", "file": "artifacts/model_int8.tflite", "passed": False},
        {"format": "onnx", "recipe": "fp32", "path": "model_fp32.onnx", "key": "onnx:fp32", "file": "artifacts/model_fp32.onnx", "passed": True},
        {"format": "tflite", "recipe": "fp32", "path": "model_fp32.tflite", "key": "tflite:fp32", "file": "artifacts/model_fp32.tflite", "passed": True},
    ]
    # no 'shipped': the first that passed parity on the host (this host has both runtimes)
    art, why = choose_artifact({"artifacts": arts}, None)
    assert art["path"] == "model_fp32.onnx" and "passed parity" in why
    # 'shipped' as a name, or per format (a later manifest names one per format)
    for shipped in ("tflite:fp32", "model_fp32.tflite", {"tflite": "model_fp32.tflite"}, ["artifacts/model_fp32.tflite"]):
        art, why = choose_artifact({"artifacts": arts, "shipped": shipped}, None)
        assert art["path"] == "model_fp32.tflite" and why == "the manifest's shipped artifact", shipped
    art, why = choose_artifact({"artifacts": arts, "shipped": "tflite:fp32"}, ["tflite:int8"])
    assert art["path"] == "model_int8.tflite" and why == "named with --artifact"
    with pytest.raises(RunnerError, match="no artifact in this bundle passed parity"):
        choose_artifact({"artifacts": [dict(a, passed=False) for a in arts]}, None)


def test_systemd_unit_keeps_a_bundles_model_name_out_of_its_directives() -> None:
    """The model name is the bundle author's: a line break in it must not add a directive to a unit
    that runs at boot, and a % must not become a systemd specifier."""
    from edgeship.runner.serve import unit_text

    crafted = "digits\nExecStartPre=/bin/sh -c 'touch /tmp/owned'\n%h"
    text = unit_text("/srv/b 100%", crafted, "/usr/bin/python3", "/srv/b 100%/edgeship-runner.pyz", ["--port", "8000"], "pi")
    keys = [line.split("=", 1)[0] for line in text.splitlines() if "=" in line]
    assert keys == ["Description", "After", "Wants", "ExecStart", "WorkingDirectory", "Restart", "RestartSec", "NoNewPrivileges", "User", "WantedBy"], text
    assert not any(line.startswith("ExecStartPre") for line in text.splitlines())  # the name stayed inside Description
    assert "%%" in text and "%h" not in text.replace("%%", "")

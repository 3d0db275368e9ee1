"""`edgeship deploy` and `edgeship device check` against a real OpenSSH server on 127.0.0.1.

The "device" behind sshd runs the bundle's runner with the Python of a minimal venv (no
TensorFlow): NumPy 2 + LiteRT + onnxruntime, or NumPy 1 + tflite-runtime 2.14.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.device_fixtures import SSHServer, free_port

pytestmark = pytest.mark.slow


@pytest.fixture()
def bundle(arm64_build: Any, tmp_path: Path) -> Path:
    dest = tmp_path / "digits-arm64"
    shutil.copytree(arm64_build.bundle, dest)
    return dest


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr


def test_deploy_over_ssh_and_local_in_parallel(sshd: SSHServer, device_venvs: Dict[str, Path], bundle: Path) -> None:
    np1, np2 = device_venvs["np1-tflite-runtime"], device_venvs["np2-litert-ort"]
    r = run_cli(
        "deploy", str(bundle),
        "--device", f"ssh://{sshd.alias}?python={np2}",  # a ~/.ssh/config-style alias, as users name their Pi
        "--device", f"local:{np1}",
        "--ssh-config", str(sshd.config),
        "--artifact", "tflite:int8", "--artifact", "tflite:fp32",
        "--runs", "20",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    data = json.loads((bundle / "report.json").read_text())
    labels = [d["device"] for d in data["devices"]]
    ssh_label = f"ssh://{sshd.alias}?python={np2}"  # the device's name includes a non-default Python
    assert labels == [ssh_label, f"local:{np1}"]
    for d, backend in zip(data["devices"], ("ai-edge-litert 2.3.0", "tflite-runtime 2.14.0")):
        assert d["passed"] and d["error"] is None
        assert d["facts"]["machine"] and d["facts"]["cores"] and d["facts"]["python"] and d["facts"]["memory_mb"]
        assert [a["artifact"] for a in d["artifacts"]] == ["model_int8.tflite", "model_fp32.tflite"]
        for a in d["artifacts"]:
            assert a["ran"] and a["backend"] == backend
            assert a["latency"]["runs"] == 20 and a["latency"]["p50_ms"] > 0
            assert a["parity"]["samples"] == 359 and a["parity"]["outputs"][0]["top1_agreement"] == 1.0
            dev_out = np.load(bundle / d["outputs"] / f"outputs_{a['artifact']}.npz")
            host_out = np.load(bundle / "parity" / f"host_{a['artifact']}.npz")
            np.testing.assert_array_equal(dev_out[dev_out.files[0]].argmax(1), host_out[host_out.files[0]].argmax(1))
            if backend.startswith("ai-edge-litert"):  # same runtime as the host: bit-identical
                assert a["max_abs_vs_host"] == 0.0
    md = (bundle / "report.md").read_text()
    assert f"### On device `{ssh_label}` — ✅ pass" in md and f"### On device `local:{np1}`" in md
    assert "| `model_int8.tflite` | ai-edge-litert 2.3.0 |" in md
    junit = (bundle / "junit.xml").read_text()
    assert f"edgeship.arm64.device.{ssh_label}.model_int8.tflite" in junit
    # the bundle stays self-consistent: every file (new reports, device outputs) matches the manifest
    from edgeship.bundle import verify

    assert verify(bundle) == {}
    # a latency budget in the profile is judged on the device's p50 too (report data drives it all)
    from edgeship import report

    tight = {**data, "target": {**data["target"], "latency_budget_ms": 1e-6}}
    assert "p50" in report.render_junit(tight) and "on the device" in report.render_junit(tight)
    assert any("| `model_int8.tflite` |" in ln and "**FAIL**" in ln for ln in report.devices_md(tight))
    # the copies on the device are gone
    assert not [p for p in Path("/tmp").glob("edgeship-*") if (p / "bundle" / "manifest.json").is_file() and str(bundle) in str(p)]

    # deploying again to the same device replaces its section; a new device adds one. URL form with a port.
    r = run_cli("deploy", str(bundle), "--device", sshd.url, "--remote-python", str(np2), "--ssh-config", str(sshd.config), "--runs", "10", "-q")
    assert r.returncode == 0, r.stderr
    data = json.loads((bundle / "report.json").read_text())
    assert [d["device"] for d in data["devices"]] == [ssh_label, f"local:{np1}", f"{sshd.url}?python={np2}"]
    last = data["devices"][-1]
    assert len(last["artifacts"]) == 4 and all(a["passed"] and a["max_abs_vs_host"] == 0.0 for a in last["artifacts"])

    # `compare` gates on the device figures too: a slower board, an artifact that stopped running there
    old = bundle / "report.json"
    r = run_cli("compare", str(old), str(old), env={"COLUMNS": "250"})
    assert r.returncode == 0 and f"{ssh_label} model_int8.tflite" in r.stdout, r.stdout + r.stderr
    slower = json.loads(old.read_text())
    slower["devices"][0]["artifacts"][0]["latency"]["p50_ms"] *= 2
    gone = slower["devices"][-1]["artifacts"][-1]
    gone.update(ran=False, reason="no onnx runtime installed", parity=None, latency=None)
    new = bundle.parent / "slower.json"
    new.write_text(json.dumps(slower))
    r = run_cli("compare", str(old), str(new), env={"COLUMNS": "250"})
    assert r.returncode == 1 and "2 regression(s)" in r.stderr and "p50 grew 100.0%" in r.stderr, r.stdout + r.stderr
    assert "no longer runs there: no onnx runtime installed" in r.stdout


def test_missing_runtime_on_the_device_names_the_pip_line(sshd: SSHServer, device_venvs: Dict[str, Path], bundle: Path) -> None:
    np1 = device_venvs["np1-tflite-runtime"]
    r = run_cli("deploy", str(bundle), "--device", f"ssh://{sshd.alias}?python={np1}", "--ssh-config", str(sshd.config), "--runs", "5", "-q")
    assert r.returncode == 4
    no_traceback(r)
    assert f"cannot run model_int8.onnx on ssh://{sshd.alias}?python={np1} (no onnx runtime installed)" in r.stderr
    assert "install there: python3 -m pip install onnxruntime" in r.stderr
    # what could run there did, and the report says which did not and why
    d = json.loads((bundle / "report.json").read_text())["devices"][0]
    assert [a["ran"] for a in d["artifacts"]] == [True, True, False, False]
    assert "not run: no onnx runtime installed" in (bundle / "report.md").read_text()
    assert "not run: no onnx runtime installed" in (bundle / "report.html").read_text()


def test_device_check_prints_facts_and_what_to_install(sshd: SSHServer, device_venvs: Dict[str, Path], bundle: Path) -> None:
    np1 = device_venvs["np1-tflite-runtime"]
    r = run_cli("device", "check", f"ssh://{sshd.alias}", "--remote-python", str(np1), "--ssh-config", str(sshd.config))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for needle in ("architecture  x86_64", "cores", "memory", "OS", "Python        3.", "NumPy         1.26.4", "tflite runtime  tflite-runtime 2.14.0".replace("  ", "  ")):
        assert needle.split()[0] in out, needle
    assert "tflite-runtime 2.14.0" in out and "onnx runtime" in out and "missing" in out
    assert "to install there:\n  python3 -m pip install onnxruntime" in out
    # against a bundle whose ONNX artifacts are required: exit 4 with the same line
    r = run_cli("device", "check", f"ssh://{sshd.alias}", "--remote-python", str(np1), "--ssh-config", str(sshd.config), "--bundle", str(bundle))
    assert r.returncode == 4 and "python3 -m pip install onnxruntime" in r.stderr
    no_traceback(r)


def test_ssh_calls_share_one_connection_and_close_it(sshd: SSHServer, tmp_path: Path) -> None:
    from edgeship.devices.ssh import SSHDevice

    dev = SSHDevice.from_url(f"ssh://{sshd.alias}", ssh_config=str(sshd.config))
    assert dev.run(["true"]).returncode == 0
    control = dev._control_dir
    assert control and len(list(Path(control).iterdir())) == 1  # the master's socket
    check = ["ssh", *dev._options("-p"), "-O", "check", dev.dest]
    assert subprocess.run(check, capture_output=True, text=True).returncode == 0  # a live master
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "f.txt").write_text("x")
    dev.upload(tmp_path / "up", "/tmp/edgeship-mux-test")  # scp rides the same master
    assert dev.run(["cat", "/tmp/edgeship-mux-test/f.txt"]).stdout == "x"
    dev.remove("/tmp/edgeship-mux-test")
    assert len(list(Path(control).iterdir())) == 1
    dev.close()
    assert not Path(control).exists()
    assert subprocess.run(["pgrep", "-f", f"ControlPath={control}"], capture_output=True).returncode == 1  # master gone
    # EDGESHIP_SSH_SHARE=0 (for clients without ControlMaster, e.g. Windows' OpenSSH): a connection per call
    os.environ["EDGESHIP_SSH_SHARE"] = "0"
    try:
        assert dev.run(["true"]).returncode == 0 and dev._control_dir is None
    finally:
        del os.environ["EDGESHIP_SSH_SHARE"]


# --------------------------------------------------------------------------- failures say what happened


def test_unreachable_host(sshd: SSHServer, bundle: Path) -> None:
    port = free_port()  # nothing listens there
    r = run_cli("deploy", str(bundle), "--device", f"ssh://{sshd.user}@127.0.0.1:{port}", "--ssh-config", str(sshd.config))
    assert r.returncode == 4 and "127.0.0.1 is unreachable: connection refused" in r.stderr
    no_traceback(r)


def test_authentication_refused(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshd.config.read_text().replace(str(sshd.key), str(sshd.other_key)))
    r = run_cli("device", "check", sshd.url, "--ssh-config", str(cfg))
    assert r.returncode == 4 and "authentication refused by 127.0.0.1" in r.stderr and "ssh-copy-id" in r.stderr
    no_traceback(r)


def test_unknown_host_key(sshd: SSHServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cfg = tmp_path / "ssh_config"
    cfg.write_text("\n".join(ln for ln in sshd.config.read_text().splitlines() if "UserKnownHostsFile" not in ln).replace("Host 127.0.0.1", f"Host 127.0.0.1\n  UserKnownHostsFile {empty}"))
    r = run_cli("device", "check", sshd.url, "--ssh-config", str(cfg))
    assert r.returncode == 4 and "host key of 127.0.0.1 is unknown or has changed" in r.stderr
    no_traceback(r)


def test_python_or_numpy_missing(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    r = run_cli("deploy", str(bundle), "--device", f"ssh://{sshd.alias}?python=/no/such/python3", "--ssh-config", str(sshd.config))
    assert r.returncode == 4 and "Python not found as '/no/such/python3'" in r.stderr and "apt install python3" in r.stderr
    no_traceback(r)
    from edgeship.venvs import base_python

    bare = tmp_path / "bare"
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(bare)], check=True)
    r = run_cli("deploy", str(bundle), "--device", f"ssh://{sshd.alias}?python={bare}/bin/python", "--ssh-config", str(sshd.config))
    assert r.returncode == 4 and "NumPy is missing" in r.stderr and "-m pip install numpy" in r.stderr
    no_traceback(r)


def test_out_of_disk_on_the_device(sshd: SSHServer, device_venvs: Dict[str, Path], bundle: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        r = run_cli(
            "deploy", str(bundle), "--device", f"ssh://{sshd.alias}?python={device_venvs['np2-litert-ort']}",
            "--ssh-config", str(sshd.config), "--remote-dir", str(small),
        )  # fmt: skip
        assert r.returncode == 4 and "out of disk space" in r.stderr and "MiB free" in r.stderr
        no_traceback(r)
        assert os.listdir(small) == [], "the work folder is removed again"
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_tampered_bundle_is_not_deployed(sshd: SSHServer, device_venvs: Dict[str, Path], bundle: Path) -> None:
    art = bundle / "artifacts" / "model_int8.onnx"
    art.write_bytes(art.read_bytes()[:-10])
    r = run_cli("deploy", str(bundle), "--device", f"local:{device_venvs['np2-litert-ort']}")
    assert r.returncode == 1 and "artifacts/model_int8.onnx no longer match" in r.stderr and "nothing was copied" in r.stderr
    no_traceback(r)


def test_a_damaged_copy_is_never_run(device_venvs: Dict[str, Path], bundle: Path) -> None:
    """Staging: the copy lands under .incoming, is verified on the device, and only then renamed."""
    from edgeship.bundle import load_manifest
    from edgeship.devices.deploy import probe, runner_files, stage
    from edgeship.devices.local import LocalDevice
    from edgeship.errors import DeviceError

    class LossyLink(LocalDevice):  # a real local copy that loses the tail of one file on the way
        def upload(self, local_dir: Path, remote_dir: str, timeout: float = 600) -> None:
            super().upload(local_dir, remote_dir, timeout)
            f = Path(remote_dir) / "artifacts" / "model_fp32.tflite"
            f.write_bytes(f.read_bytes()[:1000])

    dev = LossyLink(str(device_venvs["np2-litert-ort"]))
    manifest = load_manifest(bundle)
    info = probe(dev, make_workdir=True)
    try:
        with pytest.raises(DeviceError, match=r"arrived damaged \(artifacts/model_fp32.tflite\); nothing was run"):
            stage(dev, runner_files(bundle, manifest, manifest["artifacts"]), info, 60)
        assert not (Path(info["workdir"]) / "bundle").exists()
    finally:
        dev.remove(info["workdir"])


def test_device_without_the_profiles_accelerator_reports_latency_not_measured(device_venvs: Dict[str, Path], bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["target"]["runtime"].update(tflite_delegates=["gpu"])  # as targets/gpu.toml asks
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("deploy", str(bundle), "--device", f"local:{device_venvs['np2-litert-ort']}", "--artifact", "tflite:fp32", "--runs", "5")
    assert r.returncode == 0, r.stderr
    a = json.loads((bundle / "report.json").read_text())["devices"][0]["artifacts"][0]
    assert a["latency"]["measured"] is False and "gpu delegate not available on this device" in a["latency"]["reason"]
    assert a["passed"] and a["note"].startswith("ran on the CPU")
    md, html = (bundle / "report.md").read_text(), (bundle / "report.html").read_text()
    assert "| not measured | not measured |" in md and "latency not measured: TFLite gpu delegate" in md
    assert ">not measured</td>" in html


def test_emulated_aarch64_device_runs_the_arm64_bundle(aarch64_python: Path, bundle: Path) -> None:
    """The arm64 TFLite artifacts on the aarch64 build of the runtime (Debian arm64 Python under qemu-user)."""
    r = run_cli("deploy", str(bundle), "--device", f"local:{aarch64_python}", "--artifact", "tflite:int8", "--artifact", "tflite:fp32", "--runs", "20")
    assert r.returncode == 0, r.stderr[-3000:]
    no_traceback(r)
    d = json.loads((bundle / "report.json").read_text())["devices"][0]
    assert d["facts"]["machine"] == "aarch64" and "emulated" in (d["facts"]["emulated"] or "")
    arts = {a["key"]: a for a in d["artifacts"]}
    assert set(arts) == {"tflite:int8", "tflite:fp32"} and all(a["passed"] and a["backend"] == "tflite-runtime 2.14.0" for a in arts.values())
    assert arts["tflite:fp32"]["max_abs_vs_host"] < 1e-5  # float kernels agree across architectures
    assert arts["tflite:int8"]["parity"]["outputs"][0]["top1_agreement"] >= 0.99
    # the emulator's timings are never passed off as the device's
    assert all(not a["latency"]["measured"] and "emulated" in a["latency"]["reason"] for a in arts.values())
    md = (bundle / "report.md").read_text()
    assert "**Emulated**: aarch64 code emulated on" in md and "not measured" in md

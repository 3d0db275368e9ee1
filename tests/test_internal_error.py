"""The last guard: a failure nobody anticipated is one line naming its stage and a log file, exit 70."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

ONE_AT_A_TIME = '''import torch
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
    def forward(self, x):
        if x.shape[0] > 1:  # exports fine on one sample, fails on the parity batch
            raise RuntimeError("this net runs one sample at a time")
        return self.fc(x)
def make():
    return Net()
'''


def _log_of(line: str) -> Path:
    return Path(line.split("full traceback in ", 1)[1].split(";", 1)[0])


@pytest.mark.slow
def test_unexpected_failure_is_one_line_with_a_log_and_exit_70(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    (tmp_path / "onebyone.py").write_text(ONE_AT_A_TIME)
    args = ("build", "--model", "onebyone:make", "--input-shape", "input:1x4", "--target", "x86_64", "--out", str(tmp_path / "o"), "-q")
    r = run_cli(*args, cwd=tmp_path, env={"TMPDIR": str(tmp_path)})
    assert r.returncode == 70, r.stderr
    assert "Traceback" not in r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and line[0].startswith("error: internal error in reference outputs: RuntimeError: this net runs one sample"), r.stderr
    log = _log_of(line[0])
    assert log.parent == tmp_path and "Traceback" in log.read_text() and "onebyone.py" in log.read_text()
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.partial-*"))
    for debug in (("--debug",), ()):  # the flag after the command, or the environment variable
        d = run_cli(*args, *debug, cwd=tmp_path, env={"TMPDIR": str(tmp_path), **({} if debug else {"EDGESHIP_DEBUG": "1"})})
        assert d.returncode == 70 and "Traceback (most recent call last)" in d.stderr and "onebyone.py" in d.stderr
        assert d.stderr.rstrip().splitlines()[-1].startswith("error: internal error in reference outputs")


def test_runner_unexpected_failure_is_one_line_with_a_log_and_exit_70(tmp_path: Path) -> None:
    """A real failure the runner does not anticipate: --out names an existing file, so writing the
    outputs raises FileExistsError deep in parity (the manifest loader answers every malformed manifest
    itself, exit 2, so a broken manifest no longer reaches the guard)."""
    import hashlib

    import onnx
    from onnx import TensorProto, helper

    from edgeship.bundle import write_runner

    bundle = tmp_path / "b"
    (bundle / "artifacts").mkdir(parents=True)
    (bundle / "parity").mkdir()
    pyz = write_runner(bundle / "edgeship-runner.pyz")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(bundle / "artifacts" / "m.onnx"))
    np.savez(bundle / "parity" / "inputs.npz", x=np.zeros((2, 4), np.float32))
    files = {
        p.relative_to(bundle).as_posix(): {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
        for p in sorted(bundle.rglob("*")) if p.is_file()
    }  # fmt: skip
    art = {"path": "m.onnx", "file": "artifacts/m.onnx", "format": "onnx", "key": "onnx:fp32", "recipe": "fp32"}
    (bundle / "manifest.json").write_text(json.dumps({"artifacts": [art], "files": files, "target": {"runtime": {}}}))
    taken = tmp_path / "taken"
    taken.write_text("a file where the outputs folder would go")
    args = [sys.executable, str(pyz), "parity", str(bundle), "--out", str(taken)]
    r = subprocess.run(args, capture_output=True, text=True, env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 70 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: internal error in parity: FileExistsError:") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" in _log_of(r.stderr).read_text()
    d = subprocess.run([*args, "--debug"], capture_output=True, text=True)
    assert d.returncode == 70 and "Traceback (most recent call last)" in d.stderr

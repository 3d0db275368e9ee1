"""PyTorch nn.Modules (optional extra ``edgeship[torch]``): exported to ONNX by torch itself.

``--model pkg.module:factory`` names a function returning the module; ``--weights file.pt``
is a state_dict loaded into it. The reference is the module's own forward pass in torch.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..errors import UsageError
from . import sha256_file, workdir
from .load import InputShapes, first_line

TORCH_INSTALL = "pip install 'edgeship[torch]'"
OPSET = 17


def load_torch(spec: str, weights: Optional[str], shapes: InputShapes):  # -> Source
    try:
        import torch
    except ImportError:
        raise UsageError(f"--model {spec} is a PyTorch module, and PyTorch is not installed: {TORCH_INSTALL}") from None
    module_name, factory_name = spec.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a user's own package beside them, as `python -m` would find it
    try:
        mod = importlib.import_module(module_name)
    except Exception as e:
        raise UsageError(f"cannot import {module_name} for --model {spec}: {first_line(e)}") from None
    factory = getattr(mod, factory_name, None)
    if not callable(factory):
        raise UsageError(f"{module_name} has no function {factory_name} (from --model {spec})")
    try:
        net = factory()
    except Exception as e:
        raise UsageError(f"{spec}() failed: {first_line(e)}") from None
    if not isinstance(net, torch.nn.Module):
        raise UsageError(f"{spec}() returned {type(net).__name__}, not a torch.nn.Module")
    if weights is not None:
        wpath = Path(weights)
        if not wpath.is_file():
            raise UsageError(f"weights file not found: {weights}")
        try:
            state = torch.load(str(wpath), map_location="cpu", weights_only=True)
        except Exception as e:
            raise UsageError(f"cannot read PyTorch weights {weights}: {first_line(e)} (is the file complete and saved with torch.save(model.state_dict()))?") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        try:
            net.load_state_dict(state)
        except Exception as e:
            raise UsageError(f"weights {weights} do not fit {spec}(): {first_line(e)}") from None
    return torch_source(net, factory_name, spec, shapes, Path(weights) if weights else None)


def _own_dtype(x: np.ndarray) -> np.ndarray:
    """Float feeds as float32; integer ones (token ids) keep their dtype."""
    x = np.ascontiguousarray(x)
    return x if x.dtype.kind in "iub" else x.astype(np.float32)


def torch_source(net, factory_name: str, spec: str, shapes: InputShapes, weights: Optional[Path] = None):  # -> Source
    """An nn.Module in memory as a source: exported to ONNX by torch, its own forward pass the reference."""
    import torch

    net.eval()
    if not shapes:
        raise UsageError("a PyTorch module declares no input shape: give it with --input-shape NAME:1x3x224x224 (batch first)")
    names = [n or "input" for n in shapes]
    examples = tuple(torch.zeros(shapes[n], dtype=torch.float32) for n in shapes)
    with torch.no_grad():
        try:
            out = net(*examples)
        except Exception as e:
            raise UsageError(f"{spec}() cannot run on inputs of shape {', '.join(str(list(x.shape)) for x in examples)}: {first_line(e)}") from None
    n_out = len(out) if isinstance(out, (list, tuple)) else 1
    out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    onnx_path = workdir() / f"{factory_name}.{len(list(workdir().iterdir()))}.torch.onnx"
    try:
        torch.onnx.export(
            net,
            examples,
            str(onnx_path),
            input_names=names,
            output_names=out_names,
            dynamic_axes={n: {0: "batch"} for n in names + out_names},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter needs no onnxscript; the dynamo one does
        )
    except Exception as e:
        raise UsageError(f"torch.onnx.export cannot export {spec}: {first_line(e)}") from None
    from .onnx import load_onnx

    src = load_onnx(onnx_path, {}, name=factory_name, kind="torch")

    def reference(feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with torch.no_grad():
            y = net(*(torch.from_numpy(_own_dtype(feed[n])) for n in names))
        ys = y if isinstance(y, (list, tuple)) else [y]
        return {o: t.detach().numpy().astype(np.float32) for o, t in zip(out_names, ys)}

    src.path = weights
    src.sha256 = sha256_file(weights) if weights else sha256_file(onnx_path)
    src.model = net
    src.reference = reference
    src.info.update({"module": spec, "torch": torch.__version__, "exported_by": f"torch.onnx.export (opset {OPSET})"})
    return src

"""ONNX models: checked with onnx, dynamic dimensions fixed, reference outputs from fp32 onnxruntime."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List, Optional

from ..errors import UsageError
from . import Source, TensorSpec, sha256_file, workdir
from .load import InputShapes, check_shape_names, first_line, shape_for

_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool"}


def _dims(value_info: Any) -> List[Optional[int]]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in value_info.type.tensor_type.shape.dim]


def load_onnx(path: Path, shapes: InputShapes, name: Optional[str] = None, kind: str = "onnx") -> Source:
    """Check ``path``, fix its non-batch dynamic dimensions from ``shapes``, open it in onnxruntime."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        external = _load_external_data(model, Path(path))
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"cannot load ONNX model {path}: {first_line(e)} (is the file complete and an ONNX model?)") from None
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        m = re.search(r"No Op registered for (\w+)", str(e))
        if m:
            nodes = [n.name or n.output[0] for n in model.graph.node if n.op_type == m.group(1)]
            raise UsageError(
                f"{path}: op {m.group(1)} (node '{', '.join(nodes[:3])}') is not a standard ONNX op, and neither onnxruntime nor "
                "the quantizer can run it; replace that layer or export it with standard ONNX ops"
            ) from None
        raise UsageError(f"cannot load ONNX model {path}: {first_line(e)} (is the file complete and an ONNX model?)") from None
    if not model.graph.node:
        raise UsageError(f"cannot load ONNX model {path}: the graph has no nodes (is the file complete and an ONNX model?)")
    init = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init]
    check_shape_names([i.name for i in graph_inputs], shapes)
    changed = False
    inputs = []
    for vi in graph_inputs:
        dims = _dims(vi)
        given = shape_for(vi.name, len(graph_inputs), shapes)
        if given is not None:
            if len(given) != len(dims):
                raise UsageError(f"--input-shape for '{vi.name}' has {len(given)} dimensions, the model's input has {len(dims)}: {_show(dims)}")
            for axis, (have, want) in enumerate(zip(dims, given)):
                if have is not None and have != want:
                    raise UsageError(f"--input-shape {_show(given)} does not match input '{vi.name}' {_show(dims)} (axis {axis} is fixed to {have})")
            # The batch (first) dimension stays dynamic when the model has it dynamic.
            new = [dims[0]] + given[1:] if dims and dims[0] is None else list(given)
            for d, v in zip(vi.type.tensor_type.shape.dim, new):
                if v is not None and not (d.HasField("dim_value") and d.dim_value == v):
                    d.Clear()
                    d.dim_value = v
                    changed = True
            dims = new
        if any(d is None for d in dims[1:]):
            example = "x".join(str(d) if d is not None else "?" for d in [1] + dims[1:])
            raise UsageError(
                f"ONNX input '{vi.name}' has dynamic dimensions {_show(dims)}: fix them with --input-shape {vi.name}:{example.replace('?', 'N')}"
            )
        elem = vi.type.tensor_type.elem_type
        inputs.append(TensorSpec(vi.name, dims, _ONNX_DTYPES.get(elem, "float32")))
    fixed = Path(path)
    if changed or external:  # artifacts are copies of one self-contained file: external weights are inlined
        for o in model.graph.output:  # let shape inference recompute them from the fixed inputs
            o.type.tensor_type.ClearField("shape")
        del model.graph.value_info[:]
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception as e:
            raise UsageError(f"the shapes given with --input-shape do not fit {path}: {first_line(e)}") from None
        fixed = workdir() / f"{Path(path).stem}.{len(list(workdir().iterdir()))}.fixed.onnx"
        onnx.save(model, str(fixed))
    runner = open_reference(fixed, path)
    outputs = [TensorSpec(t.name, [None if d < 0 else d for d in t.shape], t.dtype) for t in runner.outputs]
    src = Source(
        name or Path(path).stem,
        kind,
        Path(path),
        sha256_file(path),
        inputs,
        outputs,
        model=runner,
        info={"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)},
        reference=runner.run,
        onnx_path=fixed,
    )
    return src


def open_reference(fixed: Path, original: Path) -> Any:
    """fp32 onnxruntime on the (shape-fixed) model: the reference for parity. Unsupported ops named."""
    from ..runner.probe import probe_model
    from ..runner.runners import ONNXRunner

    why = probe_model(str(fixed), "onnx")  # a crafted file crashes a child, not us
    if why and "cannot open it" not in why:
        raise UsageError(f"cannot load ONNX model {original}: {why}")
    try:
        return ONNXRunner(str(fixed))
    except Exception as e:
        msg = str(e)
        m = re.search(r"Could not find an implementation for (\w+)\(\d+\) node with name '([^']*)'", msg)
        if m:
            raise UsageError(f"{original}: op {m.group(1)} (node '{m.group(2)}') is not supported by onnxruntime; replace that layer or export it with standard ONNX ops") from None
        m = re.search(r"([\w.]*:?\w+)\(-?\d+\) is not a registered function/op", msg)
        if m:
            raise UsageError(f"{original}: op {m.group(1)} is not a standard ONNX op and onnxruntime has no kernel for it; replace that layer or export it with standard ONNX ops") from None
        detail = re.sub(r"^.*?Load model from \S+ failed:(\S+:\d+ )?", "", first_line(e, 600))
        raise UsageError(f"onnxruntime cannot open {original}: {detail[:300]}") from None


MAX_INLINE = 1 << 31  # protobuf's limit for one ONNX file


def _load_external_data(model: Any, path: Path) -> bool:
    """Read the weights a model keeps in external files (``onnx.save(..., save_as_external_data=True)``)
    into it; each file must lie inside the model's folder. True when there were any."""
    from onnx import external_data_helper as edh

    tensors = [t for t in edh._get_all_tensors(model) if edh.uses_external_data(t)]
    if not tensors:
        return False
    base = path.resolve().parent
    total = 0
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        loc = (base / info.get("location", "")).resolve()
        if base not in loc.parents:
            raise UsageError(f"{path}: tensor '{t.name}' keeps its data in {info.get('location')!r}, outside the model's folder; refusing it")
        if not loc.is_file():
            raise UsageError(f"{path}: tensor '{t.name}' keeps its data in {info.get('location')!r}, which is missing: copy it beside the model")
        total += int(info.get("length", 0) or 0)
    if total >= MAX_INLINE:
        raise UsageError(f"{path}: {total / (1 << 30):.1f} GB of external weights; models over 2 GB are not supported")
    edh.load_external_data_for_model(model, str(base))
    return True


def _show(dims: List[Optional[int]]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"

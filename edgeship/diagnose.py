"""Per-layer diagnosis of a quantized artifact: which layers add the error.

Both methods run the float and the quantized model on the same inputs and compare
intermediate tensors, using the runtimes' own debugging tools:

- TFLite: ``tf.lite.experimental.QuantizationDebugger`` re-quantizes the source model with
  NumericVerify ops; for each quantized op it measures the error that op adds given the same
  (quantized) input, in units of the output's quantization step (rmse / scale: about 0.29 is
  rounding alone; far above it means clipping or a bad range).
- ONNX: ``onnxruntime.quantization.qdq_loss_debug`` exposes every intermediate tensor of the
  QDQ artifact and of the float model; for each tensor we take the SNR against the float
  model and report how many dB were lost since the layer's input (the error growth).
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from .parity import SNR_CAP_DB

DEFAULT_SAMPLES = 64
SHOW = 5  # layers shown in reports, worst first


@dataclass
class LayerRow:
    layer: str  # a readable layer name (the Keras layer where the tensor name says it)
    op: str
    tensor: str
    score: float  # higher is worse; the meaning is LayerReport.score_name
    metrics: Dict[str, float] = field(default_factory=dict)


@dataclass
class LayerReport:
    """Layers in graph order with a score each; ``worst`` orders them for the reader."""

    artifact: str
    method: str
    score_name: str
    score_help: str
    rows: List[LayerRow]
    samples: int
    columns: List[str] = field(default_factory=list)  # metric keys shown beside the score

    def worst(self, n: int = SHOW) -> List[LayerRow]:
        return sorted(self.rows, key=lambda r: -r.score)[:n]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["worst"] = [r.layer for r in self.worst()]
        return d


def layer_label(tensor: str) -> str:
    """'digits_1/conv2_1/Relu;digits_1/conv2_1/BiasAdd' -> 'conv2'; ONNX ':0' suffixes dropped.

    Tensor names from a traced Keras model are model/layer_N/op; the layer part is what the
    user named, with the tracing suffix _N removed.
    """
    first = tensor.split(";")[0]
    first = re.sub(r":\d+$", "", first)
    parts = first.split("/")
    if len(parts) >= 3:
        return re.sub(r"_\d+$", "", parts[1])
    if len(parts) == 2:
        return re.sub(r"_\d+$", "", parts[0]) if parts[0] else parts[1]
    return first


def _samples(inputs: Dict[str, np.ndarray], n: int) -> List[Dict[str, np.ndarray]]:
    total = len(next(iter(inputs.values())))
    keep = lambda x: x if np.asarray(x).dtype.kind in "iub" else np.asarray(x, dtype=np.float32)  # noqa: E731  token ids stay integers
    return [{k: keep(v[i : i + 1]) for k, v in inputs.items()} for i in range(min(n, total))]


# --------------------------------------------------------------------------- TFLite


def tflite_debugger(source: Any, dataset: Any, inputs: Dict[str, np.ndarray], samples: int = DEFAULT_SAMPLES) -> Any:
    """A QuantizationDebugger calibrated like the int8 recipe, run on ``inputs``."""
    import tensorflow as tf

    from .convert.tflite import converter_for, representative

    from .convert.calibration import fingerprint, memo_for, shared

    conv = converter_for(source)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative(source, dataset)
    # As the int8 recipe converts, so the graph matches and its calibration (kept by the build) is reused.
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    feed = _samples(inputs, samples)
    order = [i.name for i in source.inputs]

    def debug_dataset() -> Iterator[List[np.ndarray]]:
        for s in feed:
            yield [s[name] if name in s else next(iter(s.values())) for name in order]

    with shared(memo_for(source), fingerprint(dataset.calibration)):
        return tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=debug_dataset)


def report_from_debugger(debugger: Any, artifact: str, samples: int) -> LayerReport:
    """Run ``debugger`` and turn its per-layer statistics into a LayerReport (graph order)."""
    import csv
    import io

    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)  # the public way to get op names, scales and tensor names
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(r["scale"])
        rmse = float(np.sqrt(float(r["mean_squared_error"])))
        steps = rmse / scale if scale > 0 else 0.0
        rows.append(
            LayerRow(
                layer=layer_label(r["tensor_name"]),
                op=r["op_name"],
                tensor=r["tensor_name"],
                score=round(steps, 4),
                metrics={
                    "max_abs_error": float(r["max_abs_error"]),
                    "rmse": rmse,
                    "scale": scale,
                },
            )
        )
    return LayerReport(
        artifact=artifact,
        method="tf.lite.experimental.QuantizationDebugger",
        score_name="error added (rmse / scale)",
        score_help="error each quantized op adds on its own, in quantization steps of its output; "
        "rounding alone gives about 0.29, far more means clipping or a poor range",
        rows=rows,
        samples=samples,
        columns=["rmse", "max_abs_error"],
    )


def diagnose_tflite(
    source: Any, dataset: Any, artifact: str, inputs: Dict[str, np.ndarray], samples: int = DEFAULT_SAMPLES
) -> LayerReport:
    n = min(samples, len(next(iter(inputs.values()))))
    return report_from_debugger(tflite_debugger(source, dataset, inputs, samples), artifact, n)


# --------------------------------------------------------------------------- ONNX


class _Reader:
    """The iterable CalibrationDataReader that qdq_loss_debug.collect_activations walks."""

    def __init__(self, feed: List[Dict[str, np.ndarray]]) -> None:
        self._it = iter(feed)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._it, None)

    def __iter__(self) -> "_Reader":
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _onnx_feed(path: Path, inputs: Dict[str, np.ndarray], samples: int) -> List[Dict[str, np.ndarray]]:
    import onnx

    names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    feed = _samples(inputs, samples)
    if len(names) == 1 and len(inputs) == 1:
        return [{names[0]: next(iter(s.values()))} for s in feed]
    return [{n: s[n] for n in names} for s in feed]


def diagnose_onnx(
    quant_path: Path, float_path: Path, artifact: str, inputs: Dict[str, np.ndarray], samples: int = DEFAULT_SAMPLES
) -> LayerReport:
    """SNR of every float-model tensor in the QDQ artifact, and the dB each layer lost."""
    import onnx

    feed = _onnx_feed(Path(float_path), inputs, samples)
    snr = streamed_snr(Path(quant_path), Path(float_path), feed)
    graph = onnx.load(str(float_path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    rows = []
    for node in graph.node:  # ONNX graphs are stored in topological order
        for out in node.output:
            if out not in snr:
                continue
            ops, upstream = _upstream(out, producer, snr)
            snr_in = min((snr[u] for u in upstream), default=None)
            rows.append(
                LayerRow(
                    layer=layer_label(out),
                    op="+".join(ops),
                    tensor=out,
                    score=round(noise_added_db(snr_in, snr[out]), 2),
                    metrics={"snr_in_db": None if snr_in is None else round(snr_in, 2), "snr_db": round(snr[out], 2)},
                )
            )
    return LayerReport(
        artifact=artifact,
        method="onnxruntime.quantization.qdq_loss_debug",
        score_name="noise added (dB)",
        score_help="growth of the noise-to-signal power ratio against the float model from the layer's "
        "input to its output, in dB (10·log10(1/SNR_out − 1/SNR_in)): the highest is where the error "
        "grows most; −40 dB is noise of 1% of the signal's amplitude",
        rows=rows,
        samples=len(feed),
        columns=["snr_in_db", "snr_db"],
    )


def streamed_snr(quant_path: Path, float_path: Path, feed: List[Dict[str, np.ndarray]]) -> Dict[str, float]:
    """SNR of every tensor the QDQ artifact and the float model share, one sample at a time.

    qdq_loss_debug.collect_activations keeps every intermediate tensor of every sample (ResNet50,
    64 samples: gigabytes); the SNR only needs Σref² and Σ(out−ref)² per tensor, so each sample's
    tensors are folded into those sums and dropped. Same sessions and matching as collect_activations.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import qdq_loss_debug as qdq

    suffix = qdq._TENSOR_SAVE_POSTFIX  # noqa: SLF001  (the name suffix its augmented models use)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sessions = {}
    with tempfile.TemporaryDirectory(prefix="edgeship-diag-") as tmp:
        for kind, path in (("quant", quant_path), ("float", float_path)):
            aug = Path(tmp) / f"{kind}.onnx"
            qdq.modify_model_output_intermediate_tensors(str(path), str(aug))
            sessions[kind] = ort.InferenceSession(str(aug), sess_options=opts, providers=["CPUExecutionProvider"])
    names = {k: [o.name for o in sess.get_outputs()] for k, sess in sessions.items()}
    sums: Dict[str, List[float]] = {}  # tensor -> [signal, noise]
    mismatched: set = set()
    for sample in feed:
        acts = {}
        for kind, sess in sessions.items():
            acts[kind] = {
                n[: -len(suffix)]: [v] for n, v in zip(names[kind], sess.run(None, sample)) if n.endswith(suffix)
            }
        for name, m in qdq.create_activation_matching(acts["quant"], acts["float"]).items():
            if "float" not in m or "post_qdq" not in m:
                continue
            f = np.asarray(m["float"][0], np.float64)
            q = np.asarray(m["post_qdq"][0], np.float64)
            if f.size != q.size:
                mismatched.add(name)
                continue
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(np.sum(np.square(f)))
            acc[1] += float(np.sum(np.square(q.reshape(-1) - f.reshape(-1))))
        del acts
    return {name: _snr_from_sums(sig, noise) for name, (sig, noise) in sums.items() if name not in mismatched}


def _snr_from_sums(signal: float, noise: float) -> float:
    """parity.snr_db from its two sums."""
    import math

    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(np.clip(10.0 * math.log10(signal / noise), -SNR_CAP_DB, SNR_CAP_DB))


def noise_added_db(snr_in: Optional[float], snr_out: float) -> float:
    """10·log10 of the noise-to-signal ratio a layer added (inputs without a reference add from 0)."""
    added = 10 ** (-snr_out / 10) - (0.0 if snr_in is None else 10 ** (-snr_in / 10))
    return float(max(-SNR_CAP_DB, 10 * np.log10(added))) if added > 0 else -SNR_CAP_DB


def _upstream(tensor: str, producer: Dict[str, Any], known: Dict[str, float]) -> tuple[List[str], List[str]]:
    """Op types from the nearest compared tensors up to ``tensor``, and those tensors."""
    ops: List[str] = []
    found: List[str] = []
    stack = [tensor]
    seen = set()
    while stack:
        t = stack.pop()
        node = producer.get(t)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        ops.append(node.op_type)
        for i in node.input:
            if i in known:
                found.append(i)
            elif i in producer:
                stack.append(i)
    return list(dict.fromkeys(reversed(ops))), found


def diagnose(
    fmt: str,
    artifact: Path,
    inputs: Dict[str, np.ndarray],
    source: Any = None,
    dataset: Any = None,
    float_onnx: Optional[Path] = None,
    samples: int = DEFAULT_SAMPLES,
) -> LayerReport:
    """The per-layer report of one quantized artifact, by its format's method.

    TFLite needs the source model and its calibration data (the debugger re-quantizes it);
    ONNX needs a float ONNX model, exported from ``source`` when ``float_onnx`` is not given.
    """
    from .quiet import captured_native_output

    log: List[str] = []
    with captured_native_output(log):
        return _diagnose(fmt, artifact, inputs, source, dataset, float_onnx, samples)


def _diagnose(
    fmt: str, artifact: Path, inputs: Dict[str, np.ndarray], source: Any, dataset: Any, float_onnx: Optional[Path], samples: int
) -> LayerReport:
    from .errors import UsageError

    name = Path(artifact).name
    if fmt == "tflite":
        if source is None or dataset is None:
            raise UsageError(
                f"per-layer diagnosis of {name} needs the original model: pass --reference with the model it was built from "
                "(.keras/.h5, a SavedModel folder, or .onnx)"
            )
        return diagnose_tflite(source, dataset, name, inputs, samples)
    if fmt == "onnx":
        if float_onnx is not None:
            return diagnose_onnx(Path(artifact), Path(float_onnx), name, inputs, samples)
        if source is None:
            raise UsageError(f"per-layer diagnosis of {name} needs the float model: pass --reference model.onnx or .keras")
        from .convert.onnx import export_fp32

        with tempfile.TemporaryDirectory(prefix="edgeship-diag-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_fp32(source, fp32)
            return diagnose_onnx(Path(artifact), fp32, name, inputs, samples)
    raise UsageError(f"no per-layer diagnosis for format {fmt}")

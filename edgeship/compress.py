"""Smaller models before conversion: magnitude pruning with fine-tuning, and knowledge distillation.

Both are small training loops written in Keras 3 on its TensorFlow backend (a GradientTape
step), not tensorflow-model-optimization: tfmot needs tf_keras (Keras 2) with
TF_USE_LEGACY_KERAS=1 set process-wide, so it cannot share a process with edgeship's Keras 3,
and running it in its own environment would mean a second TensorFlow install plus a
round-trip of the user's model through the Keras 2 format (which .keras files of Keras 3
do not survive). Pruning here is what tfmot's prune_low_magnitude does for the weights that
matter: per layer, the smallest-magnitude kernel weights are masked to zero on a polynomial
schedule while the model fine-tunes, and the masks are re-applied after every optimizer
step; at the end the zeros are plain weights (nothing to strip).
"""
from __future__ import annotations

import gzip
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .errors import UsageError

PRUNABLE = ("Dense", "Conv1D", "Conv2D", "Conv3D", "Embedding", "DepthwiseConv2D", "SeparableConv2D")


# --------------------------------------------------------------------------- training data


@dataclass
class TrainData:
    """Labelled samples to fine-tune or distill on (never the held-out parity set)."""

    x: Dict[str, np.ndarray]
    y: np.ndarray
    origin: str

    @property
    def n(self) -> int:
        return len(self.y)


def training_data(inputs: Any, sample: str, dataset: Any) -> TrainData:
    """The sample's training split, or the user's labelled --data minus the held-out samples."""
    if inputs is None or inputs.model is None:
        from .train import sample_dataset, sample_module

        mod = sample_module(sample)
        _, train = sample_dataset(mod)
        return TrainData({mod.INPUT_NAME: train["x"]}, train["y"], f"sample:{sample} training split ({len(train['y'])} samples)")
    if not inputs.data:
        raise UsageError("pruning and distillation fine-tune on labelled data: pass --data (a .npz with labels, or a folder of class subfolders)")
    from .data import read_image_folder, read_tensor_file, preprocessing_spec, split
    from .sources.load import load_model, parse_input_shapes

    source = load_model(inputs.model, weights=inputs.weights, signature=inputs.signature, input_shapes=parse_input_shapes(inputs.input_shapes))
    path = Path(inputs.data)
    if path.is_dir():
        spec = preprocessing_spec(source, inputs.preprocess, **inputs.preprocessing)
        feed, labels, _, _, _ = read_image_folder(path, source, spec)
    else:
        feed, labels, _ = read_tensor_file(path, source)
    if labels is None:
        raise UsageError(f"{inputs.data} has no labels: pruning and distillation need them (a 'labels' array in the .npz, or one subfolder per class)")
    n = len(labels)
    _, held = split(n, labels, inputs.calibration_samples, inputs.heldout_samples)
    keep = np.setdiff1d(np.arange(n), held)
    if len(keep) == 0:
        raise UsageError(f"{inputs.data}: every sample is held out for parity; none is left to train on")
    return TrainData({k: v[keep] for k, v in feed.items()}, labels[keep], f"{inputs.data} ({len(keep)} labelled samples not held out)")


# --------------------------------------------------------------------------- losses


def _head(model: Any) -> str:
    """'binary' (one sigmoid unit), 'softmax' (probabilities) or 'logits', read off the last layer."""
    units = int(model.outputs[0].shape[-1])
    act = getattr(model.layers[-1], "activation", None)
    name = getattr(act, "__name__", str(act))
    if units == 1:
        return "binary"
    return "softmax" if name == "softmax" else "logits"


def _hard_loss(head: str) -> Any:
    import keras

    if head == "binary":
        return keras.losses.BinaryCrossentropy()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=head == "logits")


def _predict_labels(probs: np.ndarray, head: str) -> np.ndarray:
    if head == "binary":
        return (np.asarray(probs).reshape(len(probs)) >= 0.5).astype(np.int64)
    return np.asarray(probs).argmax(axis=-1)


def accuracy(model: Any, x: Dict[str, np.ndarray], y: np.ndarray) -> float:
    probs = model.predict(_feed(model, x), batch_size=256, verbose=0)
    return float(np.mean(_predict_labels(probs, _head(model)) == np.asarray(y).reshape(-1)))


def _feed(model: Any, x: Dict[str, np.ndarray]) -> Any:
    names = [t.name.split(":")[0] for t in model.inputs]
    if len(names) == 1:
        return next(iter(x.values())) if names[0] not in x else x[names[0]]
    return [x[n] for n in names]


def _batches(n: int, batch: int, rng: np.random.Generator) -> List[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch] for i in range(0, n, batch)]


# --------------------------------------------------------------------------- pruning


@dataclass
class PruneReport:
    target: float
    reached: float  # zero weights / weights, over the pruned kernels
    layers: Dict[str, float]
    accuracy_before: float
    accuracy_after: float
    epochs: int
    learning_rate: float
    fine_tuned_on: str
    method: str = "magnitude pruning, per layer, polynomial schedule, Keras 3 mask-and-fine-tune loop"
    xnnpack_sparse: str = ""
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def prunable(model: Any) -> List[Tuple[Any, Any]]:
    """(layer, kernel variable) of every layer whose weights pruning zeroes (not biases, not norms)."""
    out = []
    for layer in _all_layers(model):
        if type(layer).__name__ not in PRUNABLE:
            continue
        var = getattr(layer, "kernel", None) if type(layer).__name__ != "Embedding" else getattr(layer, "embeddings", None)
        if var is not None:
            out.append((layer, var))
    return out


def _all_layers(model: Any) -> List[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        sub = getattr(layer, "layers", None)
        out.extend(_all_layers(layer) if sub else [layer])
    return out


def sparsity(model: Any) -> Tuple[float, Dict[str, float]]:
    """(overall, per layer) fraction of exact zeros in the prunable kernels."""
    zeros = total = 0
    per = {}
    for layer, var in prunable(model):
        w = np.asarray(var.numpy() if hasattr(var, "numpy") else var)
        z = int(np.sum(w == 0))
        per[layer.name] = z / w.size
        zeros += z
        total += w.size
    return (zeros / total if total else 0.0), per


def _masks(pairs: List[Tuple[Any, Any]], s: float) -> List[np.ndarray]:
    """Keep the largest-magnitude (1 - s) of each kernel."""
    masks = []
    for _, var in pairs:
        w = np.abs(np.asarray(var.numpy()))
        k = int(round(s * w.size))
        if k <= 0:
            masks.append(np.ones_like(w, dtype=np.float32))
            continue
        thresh = np.partition(w.reshape(-1), k - 1)[k - 1]
        masks.append((w > thresh).astype(np.float32))  # ties at the threshold go too: at least s zeros
    return masks


def prune_model(
    model: Any,
    train: TrainData,
    heldout: Dict[str, np.ndarray],
    labels: np.ndarray,
    target: float,
    epochs: int = 4,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: Any = None,
) -> Tuple[Any, PruneReport]:
    """A pruned, fine-tuned copy of ``model`` (the original is untouched) and what was measured."""
    import keras
    import tensorflow as tf

    if not 0.0 < target < 1.0:
        raise UsageError(f"--prune {target}: the sparsity is a fraction between 0 and 1 (e.g. 0.8 for 80 % zeros)")
    keras.utils.set_random_seed(seed)
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    pairs = prunable(pruned)
    if not pairs:
        raise UsageError(f"{model.name} has no Dense, Conv or Embedding kernels to prune")
    head = _head(pruned)
    loss_fn = _hard_loss(head)
    opt = keras.optimizers.Adam(learning_rate)
    before = accuracy(model, heldout, labels)
    rng = np.random.default_rng(seed)
    steps_per_epoch = int(np.ceil(train.n / batch_size))
    total = steps_per_epoch * epochs
    ramp = max(1, int(total * 0.7))  # reach the target at 70 % of the steps, then fine-tune with fixed masks
    every = max(1, ramp // 10)
    x_all = [train.x[n] for n in train.x] if len(train.x) > 1 else [next(iter(train.x.values()))]
    y_all = train.y.astype(np.float32 if head == "binary" else np.int64)
    masks = _masks(pairs, 0.0)
    tvars = pruned.trainable_variables

    @tf.function
    def step(xs: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            pred = pruned(xs if len(xs) > 1 else xs[0], training=True)
            if head == "binary":
                pred = tf.reshape(pred, tf.shape(yb))
            loss = loss_fn(yb, pred)
        opt.apply_gradients(zip(tape.gradient(loss, tvars), tvars))
        return loss

    t0 = time.perf_counter()
    n_step = 0
    task = progress.task(f"pruning {model.name} to {target:.0%} sparsity and fine-tuning", total=epochs) if progress else None
    advance = task.__enter__() if task else (lambda *a: None)
    try:
        for epoch in range(epochs):
            for idx in _batches(train.n, batch_size, rng):
                if n_step <= ramp and n_step % every == 0:
                    s_now = target * (1.0 - (1.0 - min(n_step, ramp) / ramp) ** 3)
                    masks = _masks(pairs, s_now)
                step([x[idx] for x in x_all], y_all[idx])
                for (_, var), m in zip(pairs, masks):
                    var.assign(var * m)
                n_step += 1
            advance(1, f"epoch {epoch + 1}/{epochs}")
        masks = _masks(pairs, target)  # the exact target on the final weights
        for (_, var), m in zip(pairs, masks):
            var.assign(var * m)
    finally:
        if task:
            task.__exit__(None, None, None)
    reached, per = sparsity(pruned)
    report = PruneReport(
        target=target,
        reached=reached,
        layers=per,
        accuracy_before=before,
        accuracy_after=accuracy(pruned, heldout, labels),
        epochs=epochs,
        learning_rate=learning_rate,
        fine_tuned_on=train.origin,
        xnnpack_sparse=xnnpack_sparse_applies(pruned),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return pruned, report


def xnnpack_sparse_applies(model: Any) -> str:
    """Why XNNPACK's sparse inference does (not) apply: its documented pattern, checked on the layers.

    XNNPACK (tensorflow/lite/delegates/xnnpack/README.md, "Sparse Inference") runs a float
    subgraph sparse only when it starts with a 3x3 stride-2 CONV_2D over 3 channels, holds 1x1
    CONV_2Ds with at least 2/3 zero weights (stored sparse, DENSIFY), depthwise convs, and ends
    in a spatial MEAN: the Fast Sparse ConvNets (MobileNet) shape.
    """
    convs = [l for l in _all_layers(model) if type(l).__name__ == "Conv2D"]
    if not convs:
        return "does not apply: the model has no 2-D convolutions (XNNPACK's sparse path covers 1x1 CONV_2D in MobileNet-shaped CNNs; Dense/FULLY_CONNECTED and embeddings always run dense)"
    first = convs[0]
    cfg = first.get_config()
    in_ch = int(first.input.shape[-1]) if hasattr(first, "input") else None
    if tuple(cfg.get("kernel_size", ())) != (3, 3) or tuple(cfg.get("strides", ())) != (2, 2) or in_ch != 3:
        return (
            f"does not apply: the first convolution '{first.name}' is {tuple(cfg.get('kernel_size'))} stride "
            f"{tuple(cfg.get('strides'))} over {in_ch} channel(s); XNNPACK's sparse subgraph must start with a 3x3 "
            "stride-2 CONV_2D over 3 channels and continue with 1x1 convolutions (Fast Sparse ConvNets)"
        )
    if not any(tuple(l.get_config().get("kernel_size", ())) == (1, 1) for l in convs):
        return "does not apply: no 1x1 convolutions, the only layers XNNPACK runs with sparse weights"
    return "may apply: MobileNet-shaped (3x3 stride-2 stem over 3 channels, 1x1 convolutions); needs the weights stored sparse (DENSIFY)"


def gzip_size(path: Path) -> int:
    """Bytes after gzip -9: .tflite and .onnx store dense weights, so pruning's zeros show only here."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))


# --------------------------------------------------------------------------- distillation


def width_reduced(model: Any, width: float) -> Any:
    """A copy of ``model``'s architecture with every hidden layer's units/filters/embedding size scaled
    by ``width`` (the output layer keeps its size), freshly initialised."""
    import keras

    if not 0.0 < width <= 1.0:
        raise UsageError(f"--width {width}: a fraction of the teacher's width, in (0, 1]")
    last = model.layers[-1].name

    def shrink(layer: Any) -> Any:
        cfg = layer.get_config()
        if layer.name != last:
            for key in ("units", "filters", "output_dim"):
                if isinstance(cfg.get(key), int):
                    cfg[key] = max(1, int(round(cfg[key] * width)))
        return layer.__class__.from_config(cfg)

    student = keras.models.clone_model(model, clone_function=shrink)
    student.name = f"{model.name}_student" if hasattr(student, "name") else None  # type: ignore[misc]
    return student


def logits_fn(model: Any) -> Optional[Any]:
    """x -> pre-activation outputs of a model whose last layer is a Dense with softmax/sigmoid, else None.

    A saturated softmax rounds the small probabilities to 0 in float32, and log(p) then loses
    exactly the "dark knowledge" distillation is for: the logits keep it.
    """
    import keras

    last = model.layers[-1]
    if type(last).__name__ != "Dense" or getattr(last, "activation", None) is None:
        return None
    body = keras.Model(model.inputs, last.input)

    def fn(x: Any, training: bool = False) -> Any:
        import tensorflow as tf

        return tf.matmul(body(x if isinstance(x, (list, tuple)) else [x], training=training), last.kernel) + last.bias

    return fn


def _soft_logits(z: Any, head: str, temperature: float) -> Any:
    import tensorflow as tf

    if head == "binary":
        q = tf.sigmoid(tf.reshape(z, [-1]) / temperature)
        return tf.stack([1 - q, q], axis=1)
    return tf.nn.softmax(z / temperature, axis=-1)


def _soft(p: Any, head: str, temperature: float) -> Any:
    """Model outputs -> the class distribution softened at ``temperature`` (from logits, or log p)."""
    import tensorflow as tf

    eps = 1e-7
    if head == "binary":
        p = tf.clip_by_value(tf.reshape(p, [-1]), eps, 1 - eps)
        z = tf.math.log(p) - tf.math.log(1 - p)
        q = tf.sigmoid(z / temperature)
        return tf.stack([1 - q, q], axis=1)
    z = p if head == "logits" else tf.math.log(tf.clip_by_value(p, eps, 1.0))
    return tf.nn.softmax(z / temperature, axis=-1)


@dataclass
class DistillReport:
    temperature: float
    alpha: float
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    trained_on: str
    teacher: Dict[str, Any]
    student: Dict[str, Any]
    scratch: Dict[str, Any]
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def train_student(
    student: Any,
    train: TrainData,
    teacher: Optional[Any],
    temperature: float,
    alpha: float,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> Any:
    """Fit ``student``: alpha x hard-label loss + (1 - alpha) x T^2 x KL(teacher_T || student_T).
    Without a teacher it is the from-scratch twin: the hard-label loss alone, same budget."""
    import keras
    import tensorflow as tf

    head = _head(student)
    hard = _hard_loss(head)
    kl = keras.losses.KLDivergence()
    opt = keras.optimizers.Adam(learning_rate)
    x_all = [train.x[n] for n in train.x]
    y_all = train.y.astype(np.float32 if head == "binary" else np.int64)
    soft_t = None
    if teacher is not None:  # the teacher is fixed: its softened outputs once, in inference mode
        feed = x_all if len(x_all) > 1 else x_all[0]
        t_logits = logits_fn(teacher)
        if t_logits is not None:
            z = np.concatenate([np.asarray(t_logits(feed[i : i + 256] if len(x_all) == 1 else [v[i : i + 256] for v in x_all]))
                                for i in range(0, train.n, 256)])
            soft_t = np.asarray(_soft_logits(tf.constant(z), _head(teacher), temperature))
        else:
            t_out = teacher.predict(feed, batch_size=256, verbose=0)
            soft_t = np.asarray(_soft(tf.constant(t_out), _head(teacher), temperature))
    tvars = student.trainable_variables
    a = float(alpha) if teacher is not None else 1.0
    t2 = float(temperature) ** 2
    s_logits = logits_fn(student)

    @tf.function
    def step(xs: Any, yb: Any, tb: Any) -> Any:
        with tf.GradientTape() as tape:
            x = xs if len(xs) > 1 else xs[0]
            if tb is not None and s_logits is not None:
                z = s_logits(x, training=True)
                act = tf.sigmoid(z) if head == "binary" else (tf.nn.softmax(z) if head == "softmax" else z)
                soft_s = _soft_logits(z, head, temperature)
            else:
                act = student(x, training=True)
                soft_s = None if tb is None else _soft(act, head, temperature)
            pred = tf.reshape(act, tf.shape(yb)) if head == "binary" else act
            loss = a * hard(yb, pred)
            if tb is not None:
                loss += (1.0 - a) * t2 * kl(tb, soft_s)
        opt.apply_gradients(zip(tape.gradient(loss, tvars), tvars))
        return loss

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in _batches(train.n, batch_size, rng):
            step([x[idx] for x in x_all], y_all[idx], None if soft_t is None else soft_t[idx])
    return student


def describe(model: Any, heldout: Dict[str, np.ndarray], labels: np.ndarray) -> Dict[str, Any]:
    return {"name": model.name, "parameters": int(model.count_params()), "accuracy": accuracy(model, heldout, labels)}


def distill(
    teacher: Any,
    student_arch: Any,
    train: TrainData,
    heldout: Dict[str, np.ndarray],
    labels: np.ndarray,
    temperature: float = 2.0,
    alpha: float = 0.5,
    epochs: int = 10,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 1234,
) -> Tuple[Any, Any, DistillReport]:
    """(distilled student, from-scratch twin, report). Both start from the same initial weights,
    see the same batches in the same order and train for the same steps; only the loss differs."""
    import keras

    if temperature <= 0:
        raise UsageError(f"--temperature {temperature}: must be above 0")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {alpha}: the weight of the hard-label loss, in [0, 1]")
    if tuple(student_arch.outputs[0].shape[1:]) != tuple(teacher.outputs[0].shape[1:]):
        raise UsageError(
            f"the student's output {tuple(student_arch.outputs[0].shape[1:])} does not match the teacher's "
            f"{tuple(teacher.outputs[0].shape[1:])}: it must predict the same classes"
        )
    t0 = time.perf_counter()
    keras.utils.set_random_seed(seed)
    student = keras.models.clone_model(student_arch)
    init = student.get_weights()
    scratch = keras.models.clone_model(student_arch)
    scratch.set_weights(init)
    train_student(student, train, teacher, temperature, alpha, epochs, batch_size, learning_rate, seed)
    train_student(scratch, train, None, temperature, alpha, epochs, batch_size, learning_rate, seed)
    report = DistillReport(
        temperature=temperature,
        alpha=alpha,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        trained_on=train.origin,
        teacher=describe(teacher, heldout, labels),
        student=describe(student, heldout, labels),
        scratch=describe(scratch, heldout, labels),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return student, scratch, report


def save_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")


# --------------------------------------------------------------------------- wiring for the CLI


def labelled_keras(inputs: Any, sample: str, retrain: bool, progress: Any, needs: str, why_labels: str) -> Tuple[Any, Any, Any, TrainData]:
    """(source, dataset, training metrics, training data) of a Keras model with labelled data: what
    pruning and distillation both start from; anything else is one line saying what is missing."""
    from .inputs import load_inputs

    source, dataset, training, _ = load_inputs(inputs, sample, retrain, progress)
    if source.kind != "keras":
        raise UsageError(f"{needs} a Keras model (.keras/.h5, or the samples digits and sentiment); {source.name} is a {source.kind} model")
    if dataset.labels is None:
        raise UsageError(f"{why_labels}: the data needs labels (a 'labels' array in the .npz, or one subfolder per class)")
    return source, dataset, training, training_data(inputs, sample, dataset)


def pruned_source(inputs: Any, sample: str, retrain: bool, sparsity: float, progress: Any, epochs: int = 4) -> Tuple[Any, Any, Any, PruneReport]:
    """(pruned source, dataset, training metrics, report): the model pruned and fine-tuned, then
    built like any Keras model. Only Keras models prune (the built-in Keras samples or a .keras/.h5)."""
    from .sources import sha256_file, workdir
    from .sources.keras import keras_source

    source, dataset, training, train = labelled_keras(inputs, sample, retrain, progress, "--prune needs", "--prune fine-tunes and reports accuracy")
    pruned, report = prune_model(source.model, train, dataset.heldout, dataset.labels, sparsity, epochs=epochs, progress=progress)
    path = workdir() / f"{source.name}_pruned{int(round(sparsity * 100))}.keras"
    pruned.save(path)
    info = {k: v for k, v in source.info.items() if k not in ("test_accuracy",)}
    info["pruning"] = report.to_dict()
    src = keras_source(pruned, f"{source.name}_pruned", path, sha256_file(path), **info)
    return src, dataset, training, report


def xnnpack_on_off(path: Path, feed: Dict[str, np.ndarray], threads: int, runs: int = 200) -> Dict[str, float]:
    """p50 of a float TFLite file with XNNPACK on and off, interleaved in rounds (same process)."""
    from .runner.latency import measure

    on, off = [], []
    for _ in range(3):
        on.append(measure(str(path), feed, fmt="tflite", threads=threads, runs=runs, use_xnnpack=True).p50_ms)
        off.append(measure(str(path), feed, fmt="tflite", threads=threads, runs=runs, use_xnnpack=False).p50_ms)
    return {"xnnpack_on_p50_ms": float(np.median(on)), "xnnpack_off_p50_ms": float(np.median(off))}

"""A user's data -> model inputs: image folders through OpenCV, or tensors from .npz/.npy files.

Images are preprocessed by a spec (the manifest's "preprocessing" key, the same keys the
device runner reads: size [h, w], resize, color, scale, mean, std, layout), then split into
calibration and held-out parity sets that never share a sample.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import UsageError
from .inputs import DEFAULT_CALIBRATION, DEFAULT_HELDOUT
from .sources import Dataset, Source, TensorSpec, guess_layout

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"}
RESIZE = ("area", "linear", "nearest", "cubic")  # OpenCV interpolations the runner knows
COLORS = ("rgb", "bgr", "gray")
LAYOUTS = ("NHWC", "NCHW")
SPEC_KEYS = ("size", "resize", "color", "scale", "mean", "std", "layout", "invert_if_light_background")
LABEL_KEYS = ("labels", "label", "y")
# Inputs beyond this magnitude are a unit mistake (or garbage), and calibrating on them breaks int8
# scales (TFLiteConverter's calibration even crashes on Inf): refused before any work.
MAX_ABS_INPUT = 1e9
MAX_LABEL = 2**31 - 1


# ----------------------------------------------------------------------------- preprocessing spec


def read_spec_file(path: str) -> Dict[str, Any]:
    """A small .toml or .json file with the preprocessing keys (flags override it)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"preprocessing file not found: {path}")
    try:
        if p.suffix.lower() == ".json":
            raw = json.loads(p.read_text())
        else:
            import tomllib

            raw = tomllib.loads(p.read_text())
    except Exception as e:
        raise UsageError(f"cannot read preprocessing file {path}: {str(e).splitlines()[0]}") from None
    raw = raw.get("preprocessing", raw) if isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        raise UsageError(f"preprocessing file {path} must hold a table of keys: {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in {path}; known: {', '.join(SPEC_KEYS)}")
    return raw


def image_input(source: Source) -> TensorSpec:
    if len(source.inputs) != 1:
        names = ", ".join(i.name for i in source.inputs)
        raise UsageError(f"an image folder feeds a model with one input; this one has {len(source.inputs)} ({names}): use --data FILE.npz with one array per input")
    inp = source.inputs[0]
    if len(inp.shape) != 4:
        raise UsageError(f"input '{inp.name}' has shape {_show(inp.shape)}, not an image batch (4-D): use --data FILE.npz or .npy")
    return inp


def preprocessing_spec(source: Source, file: Optional[str] = None, **flags: Any) -> Dict[str, Any]:
    """The full spec: the file's keys, then the flags, then defaults read off the model's input."""
    spec: Dict[str, Any] = dict(read_spec_file(file)) if file else {}
    spec.update({k: v for k, v in flags.items() if v is not None})
    inp = image_input(source)
    layout = str(spec.get("layout") or guess_layout(inp.shape)).upper()
    if layout not in LAYOUTS:
        raise UsageError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    hw = inp.shape[2:4] if layout == "NCHW" else inp.shape[1:3]
    channels = inp.shape[1] if layout == "NCHW" else inp.shape[3]
    size = spec.get("size") or ([int(hw[0]), int(hw[1])] if None not in hw else None)
    if not size or len(size) != 2 or any(int(v) <= 0 for v in size):
        raise UsageError(f"input '{inp.name}' {_show(inp.shape)} has no fixed image size: give it with --image-size HxW")
    color = str(spec.get("color") or ("gray" if channels == 1 else "rgb")).lower()
    if color not in COLORS:
        raise UsageError(f"color {color!r} is not one of {', '.join(COLORS)}")
    resize = str(spec.get("resize") or "area").lower()
    if resize not in RESIZE:
        raise UsageError(f"resize {resize!r} is not one of {', '.join(RESIZE)}")
    out = {
        "size": [int(size[0]), int(size[1])],
        "resize": resize,
        "color": color,
        "scale": float(spec.get("scale", 1.0 / 255.0)),
        "mean": [float(v) for v in np.atleast_1d(spec.get("mean", [0.0]))],
        "std": [float(v) for v in np.atleast_1d(spec.get("std", [1.0]))],
        "layout": layout,
    }
    if spec.get("invert_if_light_background"):
        out["invert_if_light_background"] = True
    if any(s == 0 for s in out["std"]):
        raise UsageError("std must not be 0")
    return out


def preprocess(img: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    """One image as OpenCV reads it -> one float32 sample, with the device runner's own code."""
    from .runner.images import preprocess as runner_preprocess

    return runner_preprocess(img, spec, [])[0]


# ----------------------------------------------------------------------------- reading


def list_images(folder: Path) -> Tuple[List[Path], Optional[List[int]], Optional[List[str]]]:
    """(files, labels, class names): one subfolder per class, or a flat folder without labels."""
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = [d for d in classes if any(_is_image(f) for f in d.rglob("*"))]
    if classes:
        names = [d.name for d in classes]
        # Folders named 0, 1, 2 ... are the output indices themselves; other names in sorted order.
        index = [int(n) for n in names] if all(n.isdigit() for n in names) else list(range(len(names)))
        files, labels = [], []
        for d, idx in zip(classes, index):
            for f in sorted(p for p in d.rglob("*") if _is_image(p)):
                files.append(f)
                labels.append(idx)
        return files, labels, names
    return sorted(p for p in folder.iterdir() if _is_image(p)), None, None


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def read_image_folder(folder: Path, source: Source, spec: Dict[str, Any]) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray], Optional[List[str]], int, str]:
    """(inputs, labels, class names, undecodable count, origin) from an image folder."""
    import cv2

    files, labels, names = list_images(folder)
    if not files:
        raise UsageError(
            f"data folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}): put them in it, or one subfolder per class"
        )
    flag = cv2.IMREAD_GRAYSCALE if spec["color"] == "gray" else cv2.IMREAD_COLOR
    xs, ys, bad = [], [], 0
    for i, f in enumerate(files):
        img = cv2.imread(str(f), flag)
        if img is None or img.size == 0:
            bad += 1
            continue
        xs.append(preprocess(img, spec))
        if labels is not None:
            ys.append(labels[i])
    if not xs:
        raise UsageError(f"none of the {len(files)} image files in {folder} could be decoded by OpenCV (corrupt, or not images)")
    inp = source.inputs[0]
    kind = f"{len(names)} classes" if names else "no labels"
    origin = f"images from {folder} ({len(xs)} decoded, {kind}; preprocessed with OpenCV)"
    return {inp.name: np.stack(xs)}, (np.asarray(ys, np.int64) if labels is not None else None), names, bad, origin


def read_tensor_file(path: Path, source: Source) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray], str]:
    """(inputs, labels, origin) from .npy (one input) or .npz (an array per input name, optional labels)."""
    try:
        if path.suffix.lower() == ".npy":
            arrays = {"": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise UsageError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__} (a NumPy .npy/.npz file?)") from None
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    names = [i.name for i in source.inputs]
    if all(n in arrays for n in names):
        feed = {n: arrays[n] for n in names}
    elif len(names) == 1 and len(arrays) == 1:
        feed = {names[0]: next(iter(arrays.values()))}
    else:
        raise UsageError(f"{path} holds arrays {', '.join(sorted(k for k in arrays if k)) or '(one unnamed)'}; the model's inputs are {', '.join(names)}: name one array per input")
    if not feed or any(v.ndim == 0 or len(v) == 0 for v in feed.values()):
        raise UsageError(f"{path} holds no samples")
    sizes = {len(v) for v in feed.values()}
    if len(sizes) > 1 or (labels is not None and len(labels) not in sizes):
        raise UsageError(f"arrays in {path} disagree on the number of samples: {sorted(sizes)}")
    feed = {i.name: check_input_values(f"{path}: array '{i.name}'", feed[i.name], i.dtype) for i in source.inputs}
    labels = check_labels(f"{path}: labels", labels, n_classes(source)) if labels is not None else None
    return feed, labels, f"tensors from {path} ({len(next(iter(feed.values())))} samples)"


def check_input_values(what: str, arr: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """``arr`` as ``dtype``, refused (exit 2) when it holds strings, complex numbers, NaN/Inf or absurd
    magnitudes, or integers outside ``dtype``: such data would silently change or crash calibration."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "USOV":
        raise UsageError(f"{what} holds {arr.dtype.name.rstrip('0123456789') or arr.dtype.str} values, not numbers: save numeric arrays")
    if arr.dtype.kind == "c":
        raise UsageError(f"{what} holds complex numbers: the model takes real values (save the real part, or magnitude, yourself)")
    want = np.dtype(dtype)
    if arr.dtype.kind == "f" or want.kind == "f":
        with np.errstate(all="ignore"):
            f = arr.astype(np.float64)
        bad = ~np.isfinite(f)
        if bad.any():
            n = int(bad.sum())
            raise UsageError(f"{what} holds {n} NaN/Inf value(s) of {f.size}" + (" (all of them)" if n == f.size else "") + ": remove or fix those samples")
        big = float(np.max(np.abs(f))) if f.size else 0.0
        if big > MAX_ABS_INPUT:
            raise UsageError(f"{what} holds values up to {big:.3g} in magnitude (more than {MAX_ABS_INPUT:.0e}): scale the data as the model expects")
    if want.kind in "iu":
        info = np.iinfo(want)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo < info.min or hi > info.max or (arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0)):
            raise UsageError(f"{what} holds values in [{lo:.6g}, {hi:.6g}] that are not {want.name} integers, which the model's input is")
    return arr.astype(np.float32 if want.kind == "f" else want)


def n_classes(source: Source) -> Optional[int]:
    """The class count of a classifier's first output ([batch, classes]), when fixed."""
    shape = source.outputs[0].shape if source.outputs else []
    return int(shape[-1]) if len(shape) == 2 and shape[-1] and shape[-1] > 1 else None


def check_labels(what: str, labels: np.ndarray, classes: Optional[int]) -> np.ndarray:
    """Labels as int64 class indices, one per sample; refused (exit 2) when they are strings,
    several per sample, NaN, fractional, negative or not a class of the model."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biuf":
        raise UsageError(f"{what} are {labels.dtype.kind == 'c' and 'complex numbers' or 'not numbers'}: give one integer class index per sample")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise UsageError(f"{what} have shape {list(labels.shape)}: give one class index per sample (1-D); for one-hot labels save labels.argmax(axis=1)")
    with np.errstate(all="ignore"):
        f = labels.astype(np.float64)
    if not np.all(np.isfinite(f)) or not np.all(f == np.round(f)):
        raise UsageError(f"{what} hold NaN, Inf or fractional values: give integer class indices")
    hi = classes - 1 if classes else MAX_LABEL
    if f.size and (f.min() < 0 or f.max() > hi):
        where = f"the model has {classes} classes (0..{hi})" if classes else f"class indices go from 0 to {hi}"
        raise UsageError(f"{what} range from {f.min():.6g} to {f.max():.6g}; {where}")
    return f.astype(np.int64)


def check_fits(feed: Dict[str, np.ndarray], source: Source, hint: str) -> None:
    for inp in source.inputs:
        got = list(feed[inp.name].shape[1:])
        want = inp.shape[1:]
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise UsageError(
                f"the data does not fit the model: input '{inp.name}' takes {_show([None] + list(want))} and the data gives samples of {_show(got)}; {hint}"
            )


# ----------------------------------------------------------------------------- split


def split(n: int, labels: Optional[np.ndarray], n_calibration: int, n_heldout: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(calibration, held-out) indices, disjoint; stratified by label when there are labels."""
    if n < 2:
        raise UsageError(f"the data has {n} sample(s); parity and calibration need at least 2 (one each, never the same)")
    held = min(n_heldout, n - 1) if n >= n_calibration + n_heldout else max(1, min(n_heldout, round(n * n_heldout / (n_calibration + n_heldout))))
    rng = np.random.default_rng(seed)
    if labels is not None:
        order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
        # interleave classes so any prefix is (nearly) stratified
        ranks = np.concatenate([np.arange(np.sum(labels == c)) / np.sum(labels == c) for c in np.unique(labels)])
        order = order[np.argsort(ranks, kind="stable")]
    else:
        order = rng.permutation(n)
    heldout = np.sort(order[:held])
    calibration = np.sort(order[held : held + n_calibration])
    return calibration, heldout


def load_dataset(
    data: str,
    source: Source,
    n_calibration: int = DEFAULT_CALIBRATION,
    n_heldout: int = DEFAULT_HELDOUT,
    preprocess_file: Optional[str] = None,
    seed: int = 0,
    **flags: Any,
) -> Tuple[Dataset, List[str]]:
    """The user's data as a Dataset, and the warnings to show (skipped images, small splits)."""
    path = Path(data)
    warnings: List[str] = []
    spec = None
    names = None
    if not path.exists():
        raise UsageError(f"data not found: {data} (give a folder of images, or a .npz/.npy file)")
    if path.is_dir():
        spec = preprocessing_spec(source, preprocess_file, **flags)
        feed, labels, names, bad, origin = read_image_folder(path, source, spec)
        if bad:
            warnings.append(f"skipped {bad} image file(s) in {path} that OpenCV could not decode")
        if labels is not None:
            labels = check_labels(f"class folders of {path}", labels, n_classes(source))
        # --scale/--mean/--std can turn pixels into Inf or absurd values: checked like tensors
        feed = {k: check_input_values(f"images from {path} after preprocessing (--scale/--mean/--std)", v) for k, v in feed.items()}
        check_fits(feed, source, "set --image-size, --color or --layout to match it")
    elif path.suffix.lower() in (".npz", ".npy"):
        if preprocess_file or any(v is not None for v in flags.values()):
            raise UsageError("preprocessing options apply to image folders; a .npz/.npy file is used as it is")
        feed, labels, origin = read_tensor_file(path, source)
        check_fits(feed, source, "save the arrays in the model's layout and size")
    else:
        raise UsageError(f"unsupported data {data}: give a folder of images, or a .npz/.npy file")
    n = len(next(iter(feed.values())))
    cal, held = split(n, labels, n_calibration, n_heldout, seed)
    if len(cal) < n_calibration or len(held) < n_heldout:
        warnings.append(f"{n} samples: {len(cal)} for calibration and {len(held)} held out for parity (asked for {n_calibration} and {n_heldout})")
    ds = Dataset(
        calibration={k: v[cal] for k, v in feed.items()},
        heldout={k: v[held] for k, v in feed.items()},
        labels=labels[held] if labels is not None else None,
        origin=f"{origin}: {len(held)} held out for parity, {len(cal)} others for calibration",
        class_names=names,
        preprocessing=spec,
    )
    return ds, warnings


MAX_GENERATED_BYTES = 2 << 30  # 2 GiB of generated inputs: more is a mistaken shape, not a model


def check_generated_size(inputs: Sequence[Any], n: int) -> None:
    """Refuse (exit 2) inputs whose fixed dimensions would need more than MAX_GENERATED_BYTES for
    ``n`` generated samples (an ONNX file can declare 10**9 x 10**9 inputs)."""
    total = 0
    for i in inputs:
        dims = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in list(i.shape)[1:]]
        per = 4 * int(np.prod(dims, dtype=object))
        total += per * n
        if total > MAX_GENERATED_BYTES:
            raise UsageError(
                f"input '{i.name}' has shape {_show([None] + dims)}: {n} samples of it would take {total / 2**30:.3g} GiB "
                f"(limit {MAX_GENERATED_BYTES >> 30} GiB); fix the model's input shape (--input-shape for ONNX) or pass --data"
            )


def generated_dataset(source: Source, n_calibration: int = 128, n_heldout: int = 64, seed: int = 0) -> Dataset:
    """Uniform [0, 1) inputs of the model's shapes: enough to compare runtimes, not to calibrate well."""
    check_generated_size(source.inputs, n_calibration + n_heldout)
    rng = np.random.default_rng(seed)

    def make(n: int) -> Dict[str, np.ndarray]:
        out = {}
        for i in source.inputs:
            shape = [n] + [d if d is not None else 1 for d in i.shape[1:]]
            if i.dtype.startswith("float"):
                out[i.name] = rng.random(shape, dtype=np.float32)
            else:  # token ids: inside the vocabulary, in the input's own dtype
                out[i.name] = rng.integers(0, integer_high(source, i.name), shape).astype(i.dtype)
        return out

    return Dataset(
        calibration=make(n_calibration),
        heldout=make(n_heldout),
        labels=None,
        origin=f"generated: uniform [0, 1) inputs, integers inside their valid range ({n_heldout} held-out, {n_calibration} calibration)",
        generated=True,
    )


def integer_high(source: Source, name: str) -> int:
    """One past the largest valid value of an integer input: the smallest Embedding's vocabulary
    of a Keras model (ids beyond it index nothing), else 256 (a byte's range)."""
    high = 256
    model = source.model if source.kind == "keras" else None
    if model is not None:
        dims = [int(layer.input_dim) for layer in _layers(model) if hasattr(layer, "input_dim") and type(layer).__name__ == "Embedding"]
        if dims:
            high = min(dims)
    return high


def _layers(model: Any) -> List[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_layers(layer))
    return out


def _show(dims: Sequence[Optional[int]]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"

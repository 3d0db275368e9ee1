"""Train the built-in sample models, cached by recipe and data so a second build does not retrain."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .errors import UsageError
from .progress import Progress
from .resources import cache_dir, sample_models_dir
from .sources import Dataset, Source, sha256_file
from .sources.keras import keras_source


def sample_names() -> list[str]:
    return sorted(p.parent.name for p in sample_models_dir().glob("*/model.py"))


def sample_module(name: str) -> ModuleType:
    path = sample_models_dir() / name / "model.py"
    if name not in sample_names():  # a name, never a path: --sample ../x would import and run x/model.py
        raise UsageError(f"unknown sample model '{name}'; built-in samples: {', '.join(sample_names())}")
    spec = importlib.util.spec_from_file_location(f"edgeship_sample_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def cache_key(mod: ModuleType) -> str:
    """Recipe, definition, data and Keras version: any change retrains."""
    import keras

    h = hashlib.sha256()
    here = Path(mod.__file__).parent
    h.update(json.dumps(mod.RECIPE, sort_keys=True).encode())
    for f in sorted(here.iterdir()):
        if f.is_file() and f.suffix in (".py", ".npz", ".npy"):
            h.update(f.name.encode())
            h.update(sha256_file(f).encode())
    for f in getattr(mod, "DATA", []):
        h.update(Path(f).name.encode())
        h.update(sha256_file(Path(f)).encode())
    if getattr(mod, "FRAMEWORK", "keras") == "torch":
        import torch

        h.update(torch.__version__.encode())
    else:
        h.update(keras.__version__.encode())
    return h.hexdigest()[:16]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Train/held-out indices of every sample: each class keeps the same share in both (one split for every sample)."""
    rng = np.random.default_rng(seed)
    train: list = []
    test: list = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * test_fraction))
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def sample_dataset(mod: ModuleType) -> Tuple[Dataset, Dict[str, np.ndarray]]:
    """The held-out split for parity, calibration drawn from the training split; also the train arrays."""
    x, y = mod.load_data()
    r = mod.RECIPE
    train_idx, test_idx = stratified_split(y, r["test_fraction"], r["seed"])
    rng = np.random.default_rng(r["seed"] + 1)
    calib_idx = rng.choice(train_idx, size=min(r["calibration_samples"], len(train_idx)), replace=False)
    what = "real sentences" if getattr(mod, "KIND", "image") == "text" else "real images"
    ds = Dataset(
        calibration={mod.INPUT_NAME: x[calib_idx]},
        heldout={mod.INPUT_NAME: x[test_idx]},
        labels=y[test_idx],
        origin=f"sample:{mod.NAME} held-out split ({len(test_idx)} {what}, never trained on)",
        class_names=list(mod.LABELS),
        preprocessing=mod.preprocessing() if hasattr(mod, "preprocessing") else dict(mod.PREPROCESSING),
    )
    return ds, {"x": x[train_idx], "y": y[train_idx]}


def train_sample(
    name: str = "digits",
    retrain: bool = False,
    progress: Optional[Progress] = None,
) -> Tuple[Source, Dataset, Dict[str, Any]]:
    """Return the trained sample model (from the cache when its key matches), its data and metrics."""
    progress = progress or Progress(enabled=False)
    mod = sample_module(name)
    if getattr(mod, "FRAMEWORK", "keras") == "torch":
        return _torch_sample(mod, name, retrain, progress)
    import keras

    key = cache_key(mod)
    entry = cache_dir() / "models" / f"{name}-{key}"
    ds, train = sample_dataset(mod)
    model_path = entry / "model.keras"
    load = lambda p: keras.models.load_model(p, compile=False, safe_mode=True)  # noqa: E731
    cached = None if retrain else _load_cached(entry, "model.keras", load, progress)
    if cached is not None:
        model, metrics = cached
        metrics["cached"] = True
    else:
        model, metrics = _fit(mod, train, ds, progress)
        _store(entry, "model.keras", model.save, metrics)
        metrics["cached"] = False
    metrics["cache_path"] = str(model_path)
    src = keras_source(
        model,
        name,
        model_path,
        sha256_file(model_path),
        sample=name,
        cache_key=key,
        recipe=dict(mod.RECIPE),
        test_accuracy=metrics["test_accuracy"],
    )
    return src, ds, metrics


def _load_cached(entry: Path, filename: str, load: Callable[[Path], Any], progress: Progress) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """(model, metrics) of a cache entry whose model file still has the hash recorded when it was
    trained; None (train again) when anything is missing, unreadable or swapped."""
    model_path, metrics_path = entry / filename, entry / "metrics.json"
    if not (model_path.is_file() and metrics_path.is_file()):
        return None
    why = None
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict) or not isinstance(metrics.get("test_accuracy"), float) or not isinstance(metrics.get("model_sha256"), str):
            why = "its metrics.json is malformed or predates verified caches"
        elif sha256_file(model_path) != metrics["model_sha256"]:
            why = f"{filename} does not have the hash recorded when it was trained (changed or corrupted)"
    except (OSError, ValueError) as e:
        why = f"metrics.json is unreadable ({type(e).__name__})"
    if why is None:
        try:
            return load(model_path), metrics
        except Exception as e:  # noqa: BLE001 - a cache entry that does not load is retrained, whatever the error
            why = f"{filename} does not load ({type(e).__name__})"
    progress.warn(f"cached sample model in {entry} not used: {why}; training it again")
    return None


def _store(entry: Path, filename: str, save: Callable[[Path], None], metrics: Dict[str, Any]) -> None:
    """Write a cache entry beside its final place and rename it in: a reader never sees half of one.
    The model's hash goes in metrics.json: an entry is trusted only with it."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=_ensure(entry.parent)))
    save(tmp / filename)
    metrics["model_sha256"] = sha256_file(tmp / filename)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if entry.exists():
        shutil.rmtree(entry)
    os.replace(tmp, entry)


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _fit(mod: ModuleType, train: Dict[str, np.ndarray], ds: Dataset, progress: Progress) -> Tuple[Any, Dict[str, Any]]:
    import keras

    r = mod.RECIPE
    keras.utils.set_random_seed(r["seed"])
    model = mod.build_model(keras)
    binary = getattr(mod, "LOSS", None) == "binary_crossentropy"
    model.compile(
        optimizer=keras.optimizers.Adam(r["learning_rate"]),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["binary_accuracy" if binary else "accuracy"],
    )
    epochs = r["epochs"]
    t0 = time.perf_counter()
    with progress.task(f"training sample model '{mod.NAME}'", total=epochs) as advance:

        class _Tick(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
                logs = logs or {}
                acc = logs.get("accuracy", logs.get("binary_accuracy", 0))
                advance(1, f"epoch {epoch + 1}/{epochs} loss {logs.get('loss', 0):.3f} acc {acc:.3f}")

        hist = model.fit(
            train["x"], train["y"], epochs=epochs, batch_size=r["batch_size"], verbose=0, shuffle=True, callbacks=[_Tick()]
        )
    seconds = time.perf_counter() - t0
    x_test = ds.heldout[mod.INPUT_NAME]
    probs = model.predict(x_test, batch_size=256, verbose=0)
    acc = accuracy(probs, ds.labels)
    return model, {
        "test_accuracy": acc,
        "test_samples": int(len(x_test)),
        "train_samples": int(len(train["x"])),
        "train_seconds": round(seconds, 2),
        "final_train_accuracy": float(hist.history["binary_accuracy" if binary else "accuracy"][-1]),
        "epochs": epochs,
    }


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """Class indices: argmax of several outputs, ``p >= 0.5`` of one sigmoid unit."""
    probs = np.asarray(probs)
    if probs.ndim == 1 or probs.shape[-1] == 1:
        return (probs.reshape(len(probs), -1)[:, 0] >= 0.5).astype(np.int64)
    return probs.argmax(axis=-1)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predicted_labels(probs) == np.asarray(labels).reshape(-1)))


TORCH_SAMPLE_INSTALL = "pip install 'edgeship[torch]'"


def _torch_sample(mod: ModuleType, name: str, retrain: bool, progress: Progress) -> Tuple[Source, Dataset, Dict[str, Any]]:
    """A PyTorch sample: trained (or taken from the cache) as a state_dict, then the usual torch source."""
    try:
        import torch
    except ImportError:
        raise UsageError(f"the sample '{name}' is a PyTorch model and PyTorch is not installed: {TORCH_SAMPLE_INSTALL}") from None
    from .sources.torch import torch_source

    key = cache_key(mod)
    entry = cache_dir() / "models" / f"{name}-{key}"
    ds, train = sample_dataset(mod)
    weights = entry / "model.pt"
    torch.manual_seed(mod.RECIPE["seed"])
    net = mod.build_model(torch)
    load = lambda p: net.load_state_dict(torch.load(str(p), map_location="cpu", weights_only=True))  # noqa: E731
    cached = None if retrain else _load_cached(entry, "model.pt", load, progress)
    if cached is not None:
        metrics = cached[1]
        metrics["cached"] = True
    else:
        torch.manual_seed(mod.RECIPE["seed"])
        net = mod.build_model(torch)  # fresh weights: a rejected entry may have loaded part of a state_dict
        metrics = _fit_torch(mod, net, train, ds, progress)
        _store(entry, "model.pt", lambda p: torch.save(net.state_dict(), p), metrics)
        metrics["cached"] = False
    metrics["cache_path"] = str(weights)
    shape = [1] + list(ds.heldout[mod.INPUT_NAME].shape[1:])
    src = torch_source(net, mod.NAME, f"sample:{name}", {mod.INPUT_NAME: shape}, weights)
    src.info.update(sample=name, cache_key=key, recipe=dict(mod.RECIPE), test_accuracy=metrics["test_accuracy"])
    return src, ds, metrics


def _fit_torch(mod: ModuleType, net: Any, train: Dict[str, np.ndarray], ds: Dataset, progress: Progress) -> Dict[str, Any]:
    import torch

    r = mod.RECIPE
    gen = torch.Generator().manual_seed(r["seed"])
    x = torch.from_numpy(train["x"])
    y = torch.from_numpy(train["y"])
    opt = torch.optim.SGD(net.parameters(), lr=r["learning_rate"], momentum=r["momentum"])
    loss_fn = torch.nn.CrossEntropyLoss()
    epochs = r["epochs"]
    t0 = time.perf_counter()
    correct = 0
    with progress.task(f"training sample model '{mod.NAME}' (PyTorch)", total=epochs) as advance:
        for epoch in range(epochs):
            net.train()
            order = torch.randperm(len(x), generator=gen)
            total, correct = 0.0, 0
            for i in range(0, len(x), r["batch_size"]):
                idx = order[i : i + r["batch_size"]]
                opt.zero_grad()
                logits = net(x[idx])
                loss = loss_fn(logits, y[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                correct += int((logits.argmax(1) == y[idx]).sum())
            advance(1, f"epoch {epoch + 1}/{epochs} loss {total / len(x):.3f} acc {correct / len(x):.3f}")
    seconds = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(ds.heldout[mod.INPUT_NAME])).numpy()
    return {
        "test_accuracy": accuracy(logits, ds.labels),
        "test_samples": int(len(ds.labels)),
        "train_samples": int(len(x)),
        "train_seconds": round(seconds, 2),
        "final_train_accuracy": correct / len(x),
        "epochs": epochs,
    }

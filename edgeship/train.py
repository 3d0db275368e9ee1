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
from typing import Any, Dict, Optional, Tuple

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
    h.update(keras.__version__.encode())
    return h.hexdigest()[:16]


def sample_dataset(mod: ModuleType) -> Tuple[Dataset, Dict[str, np.ndarray]]:
    """The held-out split for parity, calibration drawn from the training split; also the train arrays."""
    x, y = mod.load_data()
    r = mod.RECIPE
    train_idx, test_idx = mod.split(len(x), y, r["test_fraction"], r["seed"])
    rng = np.random.default_rng(r["seed"] + 1)
    calib_idx = rng.choice(train_idx, size=min(r["calibration_samples"], len(train_idx)), replace=False)
    ds = Dataset(
        calibration={mod.INPUT_NAME: x[calib_idx]},
        heldout={mod.INPUT_NAME: x[test_idx]},
        labels=y[test_idx],
        origin=f"sample:{mod.NAME} held-out split ({len(test_idx)} real images, never trained on)",
        class_names=list(mod.LABELS),
        preprocessing=dict(mod.PREPROCESSING),
    )
    return ds, {"x": x[train_idx], "y": y[train_idx]}


def train_sample(
    name: str = "digits",
    retrain: bool = False,
    progress: Optional[Progress] = None,
) -> Tuple[Source, Dataset, Dict[str, Any]]:
    """Return the trained sample model (from the cache when its key matches), its data and metrics."""
    import keras

    progress = progress or Progress(enabled=False)
    mod = sample_module(name)
    key = cache_key(mod)
    entry = cache_dir() / "models" / f"{name}-{key}"
    ds, train = sample_dataset(mod)
    model_path = entry / "model.keras"
    metrics_path = entry / "metrics.json"
    cached = None if retrain else _load_cached(entry, progress)
    if cached is not None:
        model, metrics = cached
        metrics["cached"] = True
    else:
        model, metrics = _fit(mod, train, ds, progress)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=_ensure(entry.parent)))
        model.save(tmp / "model.keras")
        metrics["model_sha256"] = sha256_file(tmp / "model.keras")  # a cache entry is trusted only with this hash
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
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


def _load_cached(entry: Path, progress: Progress) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """(model, metrics) of a cache entry whose model.keras still has the hash recorded when it was
    trained; None (train again) when anything is missing, unreadable or swapped."""
    import keras

    model_path, metrics_path = entry / "model.keras", entry / "metrics.json"
    if not (model_path.is_file() and metrics_path.is_file()):
        return None
    why = None
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict) or not isinstance(metrics.get("test_accuracy"), float) or not isinstance(metrics.get("model_sha256"), str):
            why = "its metrics.json is malformed or predates verified caches"
        elif sha256_file(model_path) != metrics["model_sha256"]:
            why = "model.keras does not have the hash recorded when it was trained (changed or corrupted)"
    except (OSError, ValueError) as e:
        why = f"metrics.json is unreadable ({type(e).__name__})"
    if why is None:
        try:
            return keras.models.load_model(model_path, compile=False, safe_mode=True), metrics
        except Exception as e:  # noqa: BLE001 - a cache entry that does not load is retrained, whatever the error
            why = f"model.keras does not load ({type(e).__name__})"
    progress.warn(f"cached sample model in {entry} not used: {why}; training it again")
    return None


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _fit(mod: ModuleType, train: Dict[str, np.ndarray], ds: Dataset, progress: Progress) -> Tuple[Any, Dict[str, Any]]:
    import keras

    r = mod.RECIPE
    keras.utils.set_random_seed(r["seed"])
    model = mod.build_model(keras)
    model.compile(
        optimizer=keras.optimizers.Adam(r["learning_rate"]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    epochs = r["epochs"]
    t0 = time.perf_counter()
    with progress.task(f"training sample model '{mod.NAME}'", total=epochs) as advance:

        class _Tick(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
                logs = logs or {}
                advance(1, f"epoch {epoch + 1}/{epochs} loss {logs.get('loss', 0):.3f} acc {logs.get('accuracy', 0):.3f}")

        hist = model.fit(
            train["x"], train["y"], epochs=epochs, batch_size=r["batch_size"], verbose=0, shuffle=True, callbacks=[_Tick()]
        )
    seconds = time.perf_counter() - t0
    x_test = ds.heldout[mod.INPUT_NAME]
    probs = model.predict(x_test, batch_size=256, verbose=0)
    acc = float(np.mean(probs.argmax(axis=1) == ds.labels))
    return model, {
        "test_accuracy": acc,
        "test_samples": int(len(x_test)),
        "train_samples": int(len(train["x"])),
        "train_seconds": round(seconds, 2),
        "final_train_accuracy": float(hist.history["accuracy"][-1]),
        "epochs": epochs,
    }

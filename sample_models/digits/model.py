"""The built-in sample model: a small CNN that classifies 8x8 handwritten digits.

Data: the UCI optical-recognition handwritten digits (1,797 images of 8x8 pixels, values
0..16, ten classes), as shipped by scikit-learn's ``load_digits``; copied here into
``digits.npz`` so that nothing is downloaded at run time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
NAME = "digits"
LABELS = [str(i) for i in range(10)]
INPUT_NAME = "image"
OUTPUT_NAME = "probs"

# The training recipe: part of the cache key, so changing any value retrains.
RECIPE: Dict[str, Any] = {
    "epochs": 30,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "seed": 1234,
    "test_fraction": 0.2,
    "calibration_samples": 256,
}

# How a camera frame or image file becomes a model input (the runner applies the same):
# grayscale, light strokes on a dark ground, area-resized to 8x8, scaled to [0, 1].
PREPROCESSING: Dict[str, Any] = {
    "size": [8, 8],
    "resize": "area",
    "color": "gray",
    "scale": 1.0 / 255.0,
    "mean": [0.0],
    "std": [1.0],
    "layout": "NHWC",
    "invert_if_light_background": True,
}


def load_data() -> Tuple[np.ndarray, np.ndarray]:
    """All images as float32 NHWC in [0, 1], and their integer labels."""
    with np.load(HERE / "digits.npz") as d:
        images = d["images"].astype(np.float32) / 16.0
        labels = d["labels"].astype(np.int64)
    return images[..., None], labels


def build_model(keras: Any) -> Any:
    """conv, conv, pool, conv, pool, dense: the classic digits classifier, sized for 8x8."""
    layers = keras.layers
    inputs = keras.Input(shape=(8, 8, 1), name=INPUT_NAME)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense1")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(10, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=NAME)

"""The PyTorch sample: the common starter CNN, trained on the shipped digits resized to 24x24x3.

Data: the same UCI handwritten digits as the ``digits`` sample (``../digits/digits.npz``), each
8x8 image bilinearly resized to 24x24 (OpenCV) and repeated over three channels, NCHW in [0, 1].
Training: SGD (lr 0.01, momentum 0.9) on cross-entropy, the recipe of the PyTorch tutorials.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
NAME = "cnn_torch"
FRAMEWORK = "torch"
LABELS = [str(i) for i in range(10)]
INPUT_NAME = "image"
SIZE = 24
DATA = [HERE.parent / "digits" / "digits.npz"]  # part of the cache key: a change retrains

RECIPE: Dict[str, Any] = {
    "epochs": 6,
    "batch_size": 32,
    "learning_rate": 0.01,
    "momentum": 0.9,
    "seed": 1234,
    "test_fraction": 0.2,
    "calibration_samples": 256,
}

# A camera frame or image file -> the model input (the runner applies the same).
PREPROCESSING: Dict[str, Any] = {
    "size": [SIZE, SIZE],
    "resize": "area",
    "color": "rgb",
    "scale": 1.0 / 255.0,
    "mean": [0.0],
    "std": [1.0],
    "layout": "NCHW",
    "invert_if_light_background": True,
}


def load_data() -> Tuple[np.ndarray, np.ndarray]:
    """All digits as float32 NCHW [n, 3, 24, 24] in [0, 1], and their labels."""
    import cv2

    with np.load(HERE.parent / "digits" / "digits.npz") as d:
        images = d["images"].astype(np.float32) / 16.0
        labels = d["labels"].astype(np.int64)
    big = np.stack([cv2.resize(im, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for im in images])
    return np.ascontiguousarray(np.repeat(big[:, None], 3, axis=1), np.float32), labels


def build_model(torch: Any) -> Any:
    """Conv(3->64) ReLU pool, Conv(64->128) ReLU pool, Linear(128*6*6 -> 1000) ReLU, Linear(1000 -> 10)."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(nn.Linear(128 * 6 * 6, 1000), nn.ReLU(), nn.Linear(1000, 10))

        def forward(self, x: Any) -> Any:
            return self.classifier(torch.flatten(self.features(x), 1))

    return Net()

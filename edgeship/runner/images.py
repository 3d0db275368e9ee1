"""Images and camera frames -> model inputs, with the preprocessing recorded in the manifest.

OpenCV does the reading, colour conversion and resizing (imported lazily: the runner runs
without it for check/parity/bench). Stays NumPy + cv2 only, Python 3.9+.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

OPENCV_INSTALL = "python3 -m pip install opencv-python-headless"

_INTERPOLATION = {"area": "INTER_AREA", "linear": "INTER_LINEAR", "bilinear": "INTER_LINEAR", "nearest": "INTER_NEAREST", "cubic": "INTER_CUBIC"}


class OpenCVMissing(RuntimeError):
    """OpenCV is needed (reading images, cameras) and not installed; carries the pip line."""

    def __init__(self, what: str) -> None:
        self.install = OPENCV_INSTALL
        super().__init__(f"OpenCV is not installed here, and {what} needs it: {OPENCV_INSTALL}")


def opencv(what: str = "reading images") -> Any:
    try:
        import cv2
    except Exception:
        raise OpenCVMissing(what) from None
    return cv2


def opencv_version() -> Optional[str]:
    try:
        import cv2

        return str(cv2.__version__)
    except Exception:
        return None


def read_image(path: str, spec: Dict[str, Any]) -> np.ndarray:
    """The image at ``path`` as uint8 HxW (gray) or HxWx3 (BGR, OpenCV's order)."""
    cv2 = opencv("predict on image files")
    flag = cv2.IMREAD_GRAYSCALE if spec.get("color", "rgb") == "gray" else cv2.IMREAD_COLOR
    img = cv2.imread(str(path), flag)
    if img is None:
        raise ValueError(f"cannot read {path}: not an image file OpenCV can decode (try .png or .jpg)")
    return img


def decode_image(data: bytes, spec: Dict[str, Any]) -> np.ndarray:
    """An image file's bytes (an upload) as ``read_image`` gives it; ValueError when OpenCV cannot decode them."""
    cv2 = opencv("decoding uploaded images")
    flag = cv2.IMREAD_GRAYSCALE if spec.get("color", "rgb") == "gray" else cv2.IMREAD_COLOR
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise ValueError("the body is not an image file OpenCV can decode (send .png or .jpg bytes)")
    return img


def preprocess(img: np.ndarray, spec: Dict[str, Any], input_shape: Sequence[int]) -> np.ndarray:
    """One uint8 image (gray or BGR) -> a float32 batch of one, exactly as the manifest says.

    ``spec`` keys: size [h, w], resize (area|linear|nearest|cubic), color (gray|rgb|bgr), scale,
    mean, std (per channel), layout (NHWC|NCHW), invert_if_light_background.
    """
    cv2 = opencv("preprocessing")
    color = spec.get("color", "rgb")
    if color == "gray":
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    else:
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if color == "rgb":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if spec.get("invert_if_light_background") and float(np.median(img)) > 127.0:
        img = 255 - img  # the model was trained on light strokes on a dark ground
    h, w = _target_size(spec, input_shape)
    interp = getattr(cv2, _INTERPOLATION.get(str(spec.get("resize", "linear")), "INTER_LINEAR"))
    img = cv2.resize(img, (w, h), interpolation=interp)
    x = img.astype(np.float32)
    if x.ndim == 2:
        x = x[..., None]
    x = x * np.float32(spec.get("scale", 1.0))
    mean = np.asarray(spec.get("mean", [0.0]), np.float32)
    std = np.asarray(spec.get("std", [1.0]), np.float32)
    x = (x - mean) / std
    if spec.get("layout", "NHWC") == "NCHW":
        x = x.transpose(2, 0, 1)
    return x[None].astype(np.float32)


def _target_size(spec: Dict[str, Any], input_shape: Sequence[int]) -> Tuple[int, int]:
    if spec.get("size"):
        h, w = spec["size"]
        return int(h), int(w)
    shape = list(input_shape)
    if spec.get("layout", "NHWC") == "NCHW":
        return int(shape[2]), int(shape[3])
    return int(shape[1]), int(shape[2])


def top_classes(scores: np.ndarray, class_names: Optional[List[str]], k: int) -> List[Tuple[str, float]]:
    """The ``k`` best (label, score) of one output row; probabilities as given, else a softmax."""
    s = np.asarray(scores, np.float64).reshape(-1)
    if s.min() < 0.0 or abs(s.sum() - 1.0) > 1e-2:
        e = np.exp(s - s.max())
        s = e / e.sum()
    order = np.argsort(-s)[:k]
    names = class_names or []
    return [(names[i] if i < len(names) else str(int(i)), float(s[i])) for i in order]

"""Click options for what a user brings (model, data, preprocessing), shared by every command
that takes a model. Only Click is imported here, so `edgeship --help` stays fast."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import click

from .inputs import DEFAULT_CALIBRATION, DEFAULT_HELDOUT

INPUT_OPTIONS = (
    "model", "weights", "signature", "input_shape", "data", "calibration_samples", "heldout_samples",
    "preprocess", "image_size", "resize", "color", "scale", "mean", "std", "layout",
)


def _size(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[list]:
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().replace(",", "x").split("x"))
        if h > 0 and w > 0:
            return [h, w]
    except ValueError:
        pass
    raise click.BadParameter(f"{value!r}: expected HEIGHTxWIDTH, e.g. 224x224")


def _floats(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[list]:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected numbers separated by commas, e.g. 0.485,0.456,0.406") from None


def input_options(f: Callable) -> Callable:
    """--model ... --layout: the options that say which model and which data."""
    options = [
        click.option("--model", "-m", default=None, help="Model to build: .keras, .h5, .onnx or .tflite file, a SavedModel folder, or pkg.module:factory (PyTorch, with --weights). Default: the built-in sample."),
        click.option("--weights", default=None, help="PyTorch state_dict file (.pt) for --model pkg.module:factory."),
        click.option("--signature", default=None, help="SavedModel signature (default: the only one, or serving_default)."),
        click.option("--input-shape", "input_shape", multiple=True, metavar="NAME:1x3x224x224", help="Fix an input's dynamic dimensions (ONNX) or give a PyTorch module's input; repeat per input."),
        click.option("--data", "-d", default=None, help="Real samples: a folder of images (one subfolder per class for labels) or a .npz/.npy file of input tensors."),
        click.option("--calibration-samples", type=click.IntRange(min=1, max=10_000_000), default=None, help=f"Samples used to calibrate int8 (never used for parity). Default: {DEFAULT_CALIBRATION}, or the sample's own split."),
        click.option("--heldout-samples", type=click.IntRange(min=1, max=10_000_000), default=None, help=f"Held-out samples for parity (never used for calibration). Default: {DEFAULT_HELDOUT}, or the sample's own split."),
        click.option("--preprocess", default=None, metavar="FILE", help="Image preprocessing spec (.toml/.json with size, resize, color, scale, mean, std, layout); flags override it."),
        click.option("--image-size", callback=_size, default=None, metavar="HxW", help="Resize images to HEIGHTxWIDTH (default: the model's input size)."),
        click.option("--resize", type=click.Choice(["area", "linear", "nearest", "cubic"]), default=None, help="OpenCV interpolation (default: area)."),
        click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), default=None, help="Channel order the model expects (default: gray for 1 channel, else rgb)."),
        click.option("--scale", type=float, default=None, help="Multiply pixels by this first (default: 1/255)."),
        click.option("--mean", callback=_floats, default=None, help="Subtract per channel, after scaling (e.g. 0.485,0.456,0.406)."),
        click.option("--std", callback=_floats, default=None, help="Divide per channel, after the mean (e.g. 0.229,0.224,0.225)."),
        click.option("--layout", type=click.Choice(["NHWC", "NCHW"], case_sensitive=False), default=None, help="Tensor layout (default: guessed from the model's input shape)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def pop_inputs(kwargs: Dict[str, Any]) -> Any:
    """Remove the input options from a command's kwargs and return them as an ``Inputs``."""
    from .inputs import Inputs

    v = {k: kwargs.pop(k) for k in INPUT_OPTIONS}
    return Inputs(
        model=v["model"],
        weights=v["weights"],
        signature=v["signature"],
        input_shapes=tuple(v["input_shape"]),
        data=v["data"],
        calibration_samples=v["calibration_samples"],
        heldout_samples=v["heldout_samples"],
        preprocess=v["preprocess"],
        preprocessing={
            "size": v["image_size"], "resize": v["resize"], "color": v["color"], "scale": v["scale"],
            "mean": v["mean"], "std": v["std"], "layout": v["layout"].upper() if v["layout"] else None,
        },
    )

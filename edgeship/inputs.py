"""What a user brings: the model argument and the data options, resolved to (source, dataset)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from .progress import Progress

# Sane defaults: enough calibration samples for stable int8 ranges, enough held-out ones for top-1 rates.
DEFAULT_CALIBRATION = 200
DEFAULT_HELDOUT = 200

NO_DATA_WARNING = (
    "NO DATA GIVEN: parity runs on generated uniform-noise inputs, and int8 calibration on generated data "
    "is NOT meaningful (the int8 artifacts' accuracy is unknown); pass --data with real samples"
)


@dataclass
class Inputs:
    """The model and data options shared by every command that takes a model."""

    model: Optional[str] = None
    weights: Optional[str] = None
    signature: Optional[str] = None
    input_shapes: Sequence[str] = ()
    data: Optional[str] = None
    calibration_samples: Optional[int] = None  # None: DEFAULT_* for user data, the sample's own split for the sample
    heldout_samples: Optional[int] = None
    preprocess: Optional[str] = None
    preprocessing: Dict[str, Any] = field(default_factory=dict)  # flag overrides: size, color, ...


def load_inputs(inputs: Inputs, sample: str, retrain: bool, progress: "Progress") -> Tuple[Any, Any, Optional[Dict[str, Any]], List[str]]:
    """(source, dataset, training metrics or None, warnings) for a user's model or the built-in sample."""
    from .errors import UsageError

    if inputs.model is None:
        if inputs.data or inputs.weights or inputs.signature or inputs.input_shapes:
            raise UsageError("--data, --weights, --signature and --input-shape go with --model (the sample brings its own data)")
        from .train import train_sample

        source, dataset, training = train_sample(sample, retrain=retrain, progress=progress)
        dataset, warnings = _limit(dataset, inputs.calibration_samples, inputs.heldout_samples)
        return source, dataset, training, warnings
    from .data import generated_dataset, load_dataset
    from .sources.load import load_model, parse_input_shapes

    shapes = parse_input_shapes(inputs.input_shapes)
    with progress.task(f"loading {inputs.model}"):
        source = load_model(inputs.model, weights=inputs.weights, signature=inputs.signature, input_shapes=shapes)
    progress.note(f"model '{source.name}' ({source.kind}): inputs " + ", ".join(f"{i.name} {i.shape}" for i in source.inputs))
    if inputs.data is None:
        if inputs.preprocess or any(v is not None for v in inputs.preprocessing.values()):
            raise UsageError("preprocessing options need --data (a folder of images)")
        return source, generated_dataset(source), None, [NO_DATA_WARNING]
    with progress.task(f"reading data {inputs.data}"):
        dataset, warnings = load_dataset(
            inputs.data,
            source,
            n_calibration=inputs.calibration_samples or DEFAULT_CALIBRATION,
            n_heldout=inputs.heldout_samples or DEFAULT_HELDOUT,
            preprocess_file=inputs.preprocess,
            **inputs.preprocessing,
        )
    return source, dataset, None, warnings


def _limit(dataset: Any, n_calibration: Optional[int], n_heldout: Optional[int]) -> Tuple[Any, List[str]]:
    """The sample's own split, cut to --calibration-samples / --heldout-samples when they are given
    (the first N of each: the split is already shuffled and stratified); asking for more says so."""
    import dataclasses

    warnings: List[str] = []
    have_c, have_h = len(next(iter(dataset.calibration.values()))), dataset.n_heldout
    c = min(n_calibration or have_c, have_c)
    h = min(n_heldout or have_h, have_h)
    for asked, have, what in ((n_calibration, have_c, "calibration"), (n_heldout, have_h, "held-out")):
        if asked and asked > have:
            warnings.append(f"the sample has {have} {what} samples; using all {have} (asked for {asked})")
    if (c, h) == (have_c, have_h):
        return dataset, warnings
    labels = dataset.labels[:h] if dataset.labels is not None else None
    origin = f"{dataset.origin}; first {h} held out for parity, {c} for calibration (--heldout-samples/--calibration-samples)"
    return dataclasses.replace(
        dataset,
        calibration={k: v[:c] for k, v in dataset.calibration.items()},
        heldout={k: v[:h] for k, v in dataset.heldout.items()},
        labels=labels,
        origin=origin,
    ), warnings

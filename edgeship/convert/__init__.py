"""Converters: one module per output format, selected through a registry, not flags."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..errors import DISK_FULL_HINT, ConversionError, DiskFull, UsageError, disk_full
from ..quiet import captured_native_output
from ..sources import Dataset, Source, sha256_file
from ..targets import ArtifactSpec, TargetProfile


@dataclass
class Artifact:
    """A file on disk with what a runtime needs to know about it."""

    format: str
    recipe: str
    path: Path
    sha256: str
    size: int
    required: bool = True
    inputs: List[Dict[str, Any]] = field(default_factory=list)
    outputs: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.format}:{self.recipe}"

    @property
    def filename(self) -> str:
        return self.path.name

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["path"] = self.path.name
        return d


def conversion_options(spec: ArtifactSpec, profile: TargetProfile) -> Dict[str, Any]:
    """The profile settings that change the file ``spec`` produces.

    Two targets with the same format, recipe and these options get the same file, so a
    multi-target build converts it once.
    """
    from ..recipes import RECIPES

    opts: Dict[str, Any] = {}
    if spec.format == "tflite" and RECIPES[spec.recipe].needs_calibration:
        opts["io"] = [profile.io.input_dtype, profile.io.output_dtype]
    if spec.format == "onnx" and spec.recipe in ("int8", "int8_strict", "dynamic"):
        opts["reduce_range"] = profile.runtime.reduce_range
    return opts


class Skipped(Exception):
    """This source cannot give this artifact (e.g. re-quantizing a TFLite file): say why, build the rest."""


def plan(source: Source, profile: TargetProfile) -> List[ArtifactSpec]:
    """The profile's buildable artifacts; for a TFLite source, the file's own recipe is always among them."""
    specs = list(profile.buildable)
    own = f"tflite:{source.recipe}"
    if source.kind == "tflite" and source.recipe and profile.format_unavailable("tflite") is None and not any(s.key == own for s in specs):
        specs.insert(0, ArtifactSpec("tflite", source.recipe))
    return specs


Converter = Callable[[Source, str, Path, Optional[Dataset], TargetProfile], List[str]]


def _converters() -> Dict[str, Converter]:
    from . import onnx as onnx_conv, tflite as tflite_conv

    return {"tflite": tflite_conv.convert, "onnx": onnx_conv.convert}


def convert(
    source: Source, spec: ArtifactSpec, dataset: Optional[Dataset], profile: TargetProfile, out_dir: Path
) -> Artifact:
    """Produce ``spec`` from ``source`` into ``out_dir`` and describe it with its own runtime."""
    from ..runner.runners import open_runner

    path = out_dir / spec.filename
    log: List[str] = []
    try:
        with captured_native_output(log):
            notes = _converters()[spec.format](source, spec.recipe, path, dataset, profile) or []
    except (UsageError, ConversionError, Skipped):
        raise
    except Exception as e:
        if disk_full(e) or any("No space left on device" in line for line in log):
            raise DiskFull(f"converting {source.name} to {spec.key}: {DISK_FULL_HINT}") from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
        raise ConversionError(f"converting {source.name} to {spec.key} failed: {first}") from e
    try:
        desc = open_runner(str(path), spec.format).describe()
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
        raise ConversionError(f"the {spec.key} artifact of {source.name} does not open in its runtime: {first}") from e
    return Artifact(
        format=spec.format,
        recipe=spec.recipe,
        path=path,
        sha256=sha256_file(path),
        size=path.stat().st_size,
        required=spec.required,
        inputs=desc["inputs"],
        outputs=desc["outputs"],
        notes=list(notes),
        options=conversion_options(spec, profile),
    )

"""The build pipeline: source -> artifacts -> runtimes -> parity/latency -> bundle.

Each stage is a plain function of the previous stage's values; this module only wires
them together and owns the "write to a temporary directory, then rename" rule.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .convert import Artifact, convert
from .errors import UsageError
from .parity import ParityResult, compare
from .progress import Progress
from .runner.latency import LatencyResult, measure
from .runner.runners import open_runner
from .sources import Dataset, Source, load_keras
from .targets import TargetProfile, load_target


@dataclass
class BuildResult:
    target: TargetProfile
    source: Source
    dataset: Dataset
    artifacts: List[Artifact]
    parity: Dict[str, ParityResult]
    latency: Dict[str, LatencyResult]
    training: Optional[Dict[str, Any]] = None
    bundle: Optional[Path] = None
    warnings: List[str] = field(default_factory=list)

    def artifact_passed(self, a: Artifact) -> bool:
        return self.parity[a.key].passed and self.latency_ok(a)

    def latency_ok(self, a: Artifact) -> bool:
        budget = self.target.latency_budget_ms
        lat = self.latency.get(a.key)
        return budget is None or lat is None or not lat.measured or lat.p50_ms <= budget

    @property
    def failures(self) -> List[str]:
        out = []
        for a in self.artifacts:
            if not a.required:
                continue
            out += [f"{a.filename}: {m}" for m in self.parity[a.key].failures]
            if not self.latency_ok(a):
                out.append(
                    f"{a.filename}: latency p50 {self.latency[a.key].p50_ms:.3f} ms over the budget of "
                    f"{self.target.latency_budget_ms} ms"
                )
        return out

    @property
    def passed(self) -> bool:
        return not self.failures


def load_source(model: Optional[str], sample: str, retrain: bool, progress: Progress):
    """(source, dataset, training metrics) for a user's model or the built-in sample."""
    if model is None:
        from .train import train_sample

        return train_sample(sample, retrain=retrain, progress=progress)
    path = Path(model)
    if not path.exists():
        raise UsageError(f"model not found: {model}")
    if path.suffix in (".keras", ".h5"):
        src = load_keras(path)
    else:
        raise UsageError(f"unsupported model file {model}: expected .keras or .h5")
    return src, generated_dataset(src), None


def generated_dataset(source: Source, n_calibration: int = 128, n_heldout: int = 64, seed: int = 0) -> Dataset:
    """Uniform [0, 1) inputs of the model's shapes: enough to compare runtimes, not to calibrate well."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> Dict[str, np.ndarray]:
        out = {}
        for i in source.inputs:
            shape = [n] + [d if d is not None else 1 for d in i.shape[1:]]
            out[i.name] = rng.random(shape, dtype=np.float32)
        return out

    return Dataset(
        calibration=make(n_calibration),
        heldout=make(n_heldout),
        labels=None,
        origin=f"generated: uniform [0, 1) inputs ({n_heldout} held-out, {n_calibration} calibration)",
        generated=True,
    )


def host_threads(profile: TargetProfile) -> int:
    """The profile's thread count, capped at this host's cores (more would only oversubscribe)."""
    cores = os.cpu_count() or 1
    return max(1, min(profile.runtime.threads or cores, cores))


def runner_options(profile: TargetProfile, fmt: str) -> Dict[str, Any]:
    if fmt == "tflite":
        return {"use_xnnpack": profile.runtime.xnnpack}
    return {"providers": profile.runtime.onnx_providers}


def check_parity(
    artifact: Artifact, reference: Dict[str, np.ndarray], dataset: Dataset, profile: TargetProfile
) -> tuple[ParityResult, Dict[str, np.ndarray]]:
    runner = open_runner(str(artifact.path), artifact.format, threads=host_threads(profile), **runner_options(profile, artifact.format))
    outputs = runner.run(dataset.heldout)
    result = compare(
        artifact.filename,
        reference,
        outputs,
        profile.budget_for(artifact.recipe),
        labels=dataset.labels,
        inputs_from=dataset.origin,
    )
    return result, outputs


def run_build(
    target: str = "arm64",
    model: Optional[str] = None,
    out: Optional[str] = None,
    sample: str = "digits",
    retrain: bool = False,
    runs: int = 0,
    progress: Optional[Progress] = None,
) -> BuildResult:
    from . import bundle

    progress = progress or Progress(enabled=False)
    profile = load_target(target)
    source, dataset, training = load_source(model, sample, retrain, progress)
    result = BuildResult(profile, source, dataset, [], {}, {}, training=training)
    if training:
        how = "cached" if training.get("cached") else f"trained in {training['train_seconds']} s"
        progress.note(f"sample model '{source.name}': held-out accuracy {training['test_accuracy']:.2%} ({how})")
    if dataset.generated:
        w = "no data given: parity runs on generated inputs and int8 calibration on generated data is not meaningful; pass --data"
        result.warnings.append(w)
        progress.warn(w)
    out_dir = Path(out) if out else Path("dist") / f"{source.name}-{profile.name}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        (work / "artifacts").mkdir()
        with progress.task("reference outputs"):
            reference = source.predict(dataset.heldout)
        outputs: Dict[str, Dict[str, np.ndarray]] = {}
        for spec in profile.artifacts:
            with progress.task(f"converting {spec.key}" + (" (calibrating)" if "int8" in spec.recipe else "")):
                art = convert(source, spec, dataset, profile, work / "artifacts")
            result.artifacts.append(art)
            with progress.task(f"parity of {art.filename} on {dataset.n_heldout} samples"):
                result.parity[art.key], outputs[art.key] = check_parity(art, reference, dataset, profile)
        n_runs = runs or profile.runtime.runs
        threads = host_threads(profile)
        for art in result.artifacts:
            with progress.task(f"timing {art.filename} ({n_runs} runs, {threads} threads)"):
                result.latency[art.key] = measure(
                    str(art.path),
                    dataset.first(1),
                    fmt=art.format,
                    threads=threads,
                    warmup=profile.runtime.warmup,
                    runs=n_runs,
                    **runner_options(profile, art.format),
                )
        bundle.write(work, result, reference, outputs)
        result.bundle = bundle.publish(work, out_dir)
        for art in result.artifacts:  # they moved with the folder
            art.path = result.bundle / "artifacts" / art.filename
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return result

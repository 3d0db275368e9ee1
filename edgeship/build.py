"""The build pipeline: source -> artifacts -> runtimes -> parity/latency -> bundle.

Each stage is a plain function of the previous stage's values; this module only wires
them together and owns the "write to a temporary directory, then rename" rule.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .convert import Artifact, Skipped, conversion_options, convert, plan
from .data import generated_dataset  # noqa: F401  (moved to data.py; importable from here)
from .errors import EXIT_CONVERSION, ConversionError, EdgeshipError, UsageError
from .parity import ParityResult, compare
from .progress import Progress
from .runner.latency import LatencyResult, measure
from .runner.runners import open_runner
from .inputs import NO_DATA_WARNING, Inputs, load_inputs
from .measure import PeakMemory, Stages
from .sources import Dataset, Source
from .targets import ArtifactSpec, TargetProfile, load_target, load_targets


@dataclass
class FailedArtifact:
    """An artifact the build tried and lost: reported with its reason, never shipped."""

    key: str
    filename: str
    required: bool
    reason: str
    exit_code: int  # what the build exits with if no artifact of this format is built

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "file": self.filename, "required": self.required, "reason": self.reason}


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
    skipped: Dict[str, str] = field(default_factory=dict)  # artifact key -> why this target does not get it
    diagnosis: Dict[str, Any] = field(default_factory=dict)  # artifact key -> diagnose.LayerReport
    # artifact key -> why it could not be built (converter raised, or the file does not run in its runtime)
    failed: Dict[str, FailedArtifact] = field(default_factory=dict)
    stages: Optional[Stages] = None  # the whole build's step times (shared by its targets)
    memory: Optional[PeakMemory] = None  # the whole build's process-tree memory sampler
    reused: Dict[str, str] = field(default_factory=dict)  # artifact key -> which work was taken from an earlier target

    def build_info(self) -> Dict[str, Any]:
        """report.json's "build": wall time so far, per-stage totals, this target's steps, peak memory."""
        if self.stages is None:
            return {}
        name = self.target.name
        steps = [s for s in self.stages.steps if s.get("target") in (None, name)]
        info: Dict[str, Any] = {
            "wall_seconds": round(self.stages.wall(), 2),
            "wall_note": "from the start of the build to the writing of this report (a multi-target build's "
            "shared steps, loading and reference outputs, are listed in every bundle)",
            "by_stage": self.stages.totals(steps),
            "steps": steps,
            "reused": dict(self.reused),
        }
        if self.memory is not None:
            info["peak_memory"] = self.memory.to_dict()
        return info

    def artifact_passed(self, a: Artifact) -> bool:
        return self.parity[a.key].passed and self.latency_ok(a)

    def latency_ok(self, a: Artifact) -> bool:
        budget = self.target.latency_budget_ms
        lat = self.latency.get(a.key)
        return budget is None or lat is None or not lat.measured or lat.p50_ms <= budget

    @property
    def failures(self) -> List[str]:
        out = [f"{f.filename}: not built: {f.reason}" for f in self.failed.values() if f.required]
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
    """(source, dataset, training metrics) for a model with generated data, or the built-in sample."""
    source, dataset, training, _ = load_inputs(Inputs(model=model), sample, retrain, progress)
    return source, dataset, training


def host_threads(profile: TargetProfile) -> int:
    """The profile's thread count, capped at this host's cores (more would only oversubscribe)."""
    cores = os.cpu_count() or 1
    return max(1, min(profile.runtime.threads or cores, cores))


def runner_options(profile: TargetProfile, fmt: str, accelerated: bool = False) -> Dict[str, Any]:
    """Runner keyword arguments for ``profile``; the TFLite delegates only when ``accelerated`` (present here)."""
    if fmt == "tflite":
        opts: Dict[str, Any] = {"use_xnnpack": profile.runtime.xnnpack}
        if accelerated and profile.runtime.tflite_delegates:
            opts["delegates"] = list(profile.runtime.tflite_delegates)
        return opts
    return {"providers": profile.runtime.onnx_providers}


def heldout_outputs(artifact: Artifact, dataset: Dataset, profile: TargetProfile) -> Dict[str, np.ndarray]:
    """The artifact's outputs on the held-out set, in its runtime with the profile's options (in batches)."""
    from .accelerators import missing

    accelerated = missing(profile, artifact.format) is None
    runner = open_runner(
        str(artifact.path), artifact.format, threads=host_threads(profile), **runner_options(profile, artifact.format, accelerated)
    )
    return runner.run(dataset.heldout)


def check_parity(
    artifact: Artifact, reference: Dict[str, np.ndarray], dataset: Dataset, profile: TargetProfile
) -> tuple[ParityResult, Dict[str, np.ndarray]]:
    outputs = heldout_outputs(artifact, dataset, profile)
    result = compare(
        artifact.filename,
        reference,
        outputs,
        profile.budget_for(artifact.recipe),
        labels=dataset.labels,
        inputs_from=dataset.origin,
    )
    return result, outputs


def explain_failures(
    result: BuildResult, artifacts_dir: Path, progress: Progress, shared: Optional[Dict[str, Any]] = None
) -> None:
    """Per-layer diagnosis of every calibrated (int8) artifact that missed its budget.

    ``shared`` holds the diagnoses of earlier targets of this build: the same bytes are diagnosed once.
    """
    from .diagnose import diagnose
    from .recipes import RECIPES

    shared = {} if shared is None else shared
    fp32 = next((a.path for a in result.artifacts if a.format == "onnx" and a.recipe == "fp32"), None)
    for art in result.artifacts:
        if result.parity[art.key].passed or not RECIPES[art.recipe].needs_calibration:
            continue
        key = "diagnosis:" + json.dumps([art.sha256, art.format], sort_keys=True)
        if key in shared:
            result.diagnosis[art.key] = dataclasses.replace(shared[key][1], artifact=art.filename)
            result.reused[art.key] = ", ".join(filter(None, [result.reused.get(art.key), f"diagnosis from {shared[key][0]}"]))
            continue
        with progress.task(f"per-layer diagnosis of {art.filename}"):
            try:
                result.diagnosis[art.key] = diagnose(
                    art.format, art.path, result.dataset.heldout, result.source, result.dataset, float_onnx=fp32
                )
                shared[key] = (result.target.name, result.diagnosis[art.key])
            except Exception as e:  # the diagnosis explains a failure; it must not hide it
                msg = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
                result.warnings.append(f"per-layer diagnosis of {art.filename} failed: {msg}")


def run_build(
    target: str = "arm64",
    model: Optional[str] = None,
    out: Optional[str] = None,
    sample: str = "digits",
    retrain: bool = False,
    runs: int = 0,
    progress: Optional[Progress] = None,
    inputs: Optional[Inputs] = None,
) -> BuildResult:
    """Build one target (a built-in name or a .toml path); ``out`` is the bundle folder."""
    return run_builds([target], model=model, out=out, sample=sample, retrain=retrain, runs=runs, progress=progress, inputs=inputs)[0]


SourceBundle = Tuple[Source, Dataset, Optional[Dict[str, Any]]]


def run_builds(
    targets: Union[str, Sequence[str]] = "arm64",
    model: Optional[str] = None,
    out: Optional[str] = None,
    sample: str = "digits",
    retrain: bool = False,
    runs: int = 0,
    progress: Optional[Progress] = None,
    loaded: Optional[SourceBundle] = None,
    inputs: Optional[Inputs] = None,
    sign_key: Optional[str] = None,
) -> List[BuildResult]:
    """Build one model for several targets: one bundle each, every shared artifact converted once.

    ``targets`` is a ``--target`` string (name, .toml path, comma-separated list, ``all``) or a
    list of single references. With one target ``out`` is the bundle folder; with several it is
    the parent folder of ``<model>-<target>`` bundles (default ``dist``). ``loaded`` is an
    already loaded (source, dataset, training) to build instead of ``model``/``sample``;
    ``inputs`` carries a user's model and data options (``model`` alone is the short form).
    All bundles are published together at the end: a failure leaves none of them half-written.
    ``sign_key`` (an OpenSSH private key) signs each manifest before it is published.
    """
    progress = progress or Progress(enabled=False)
    memory = PeakMemory()
    stages = Stages(memory)
    try:
        return _run_builds(targets, model, out, sample, retrain, runs, progress, loaded, inputs, sign_key, stages, memory)
    finally:
        memory.stop()


def _run_builds(
    targets: Union[str, Sequence[str]],
    model: Optional[str],
    out: Optional[str],
    sample: str,
    retrain: bool,
    runs: int,
    progress: Progress,
    loaded: Optional[SourceBundle],
    inputs: Optional[Inputs],
    sign_key: Optional[str],
    stages: Stages,
    memory: PeakMemory,
) -> List[BuildResult]:
    from . import bundle

    if sign_key and not Path(sign_key).expanduser().is_file():
        raise UsageError(f"--sign-key {sign_key} not found (an OpenSSH private key, e.g. ~/.ssh/id_ed25519)")
    profiles = load_targets(targets)  # every profile validated before any work
    if loaded:
        source, dataset, training = loaded
        warnings = [NO_DATA_WARNING] if dataset.generated else []
    else:
        with stages.time("load", "loading the model and data"):
            source, dataset, training, warnings = load_inputs(inputs or Inputs(model=model), sample, retrain, progress)
    check_budget_outputs(profiles, [o.name for o in source.outputs])
    if training:
        how = "cached" if training.get("cached") else f"trained in {training['train_seconds']} s"
        progress.note(f"sample model '{source.name}': held-out accuracy {training['test_accuracy']:.2%} ({how})")
    for w in warnings:
        progress.warn(w)
    if len(profiles) == 1 and out:
        out_dirs = [Path(out)]
    else:
        out_dirs = [Path(out or "dist") / f"{source.name}-{p.name}" for p in profiles]
    with progress.task("reference outputs"), stages.time("reference", "reference outputs"):
        reference = source.predict(dataset.heldout)
    shared: Dict[str, Any] = {}  # conversion key -> Artifact, or the exception it failed with
    staged: List[Tuple[BuildResult, Path, Path]] = []
    try:
        for profile, out_dir in zip(profiles, out_dirs):
            result = BuildResult(
                profile, source, dataset, [], {}, {}, training=training, warnings=list(warnings), stages=stages, memory=memory
            )
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            sweep_stale(out_dir.parent)
            # the pid in the name lets a later build tell a dead build's leftovers (SIGKILL) from a running one's
            work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{os.getpid()}@{_host()}-", dir=out_dir.parent))
            staged.append((result, work, out_dir))
            _build_target(result, reference, work, shared, runs, progress)
        if sign_key:  # before the renames: ssh-keygen may take a while, and may fail
            for _, work, _ in staged:
                bundle.sign(work, sign_key)
        with signals_held():  # every bundle is published, or none: an interrupt waits for the renames
            for result, work, out_dir in staged:
                result.bundle = bundle.publish(work, out_dir)
                PUBLISHED.append(result.bundle)
                for art in result.artifacts:  # they moved with the folder
                    art.path = result.bundle / "artifacts" / art.filename
    except BaseException:
        for _, work, _ in staged:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return [r for r, _, _ in staged]


PUBLISHED: List[Path] = []  # bundles this process renamed into place (an interrupt after that says so)
_STALE = re.compile(r"^\..+\.(?:partial|old)-(\d+)(?:@(\w+))?(?:-.*)?$")


def _host() -> str:
    """This machine's name as a word: a pid means nothing on another host (a shared volume, a container)."""
    import socket

    return re.sub(r"\W", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_stale(parent: Path) -> List[Path]:
    """Remove ``.NAME.partial-PID-*`` and ``.NAME.old-PID`` folders left by builds that are dead (killed
    with SIGKILL, or a power cut); a running build's folders (its pid alive) are left alone."""
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _STALE.match(p.name)
        if not m or (m.group(2) and m.group(2) != _host()):  # another machine's build: its pid cannot be checked here
            continue
        if p.is_dir() and not p.is_symlink() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (delivered when the block ends) around a few renames that must not be cut."""
    import signal

    sigs = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, ValueError, OSError):  # no pthread_sigmask here (Windows)
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def check_budget_outputs(profiles: Sequence[TargetProfile], outputs: Sequence[str]) -> None:
    """A per-output budget must name an output of this model: refused before any conversion."""
    for p in profiles:
        for recipe, table in p.budgets.items():
            unknown = sorted(set(table.get("outputs", {})) - set(outputs))  # type: ignore[arg-type]
            if unknown:
                raise UsageError(
                    f"{p.source}: [budgets.{recipe}.outputs.{unknown[0]}] names no output of this model; "
                    f"its outputs are: {', '.join(outputs)}"
                )


def _build_target(
    result: BuildResult, reference: Dict[str, np.ndarray], work: Path, shared: Dict[str, Any], runs: int, progress: Progress
) -> None:
    """Fill ``work`` with one target's bundle: artifacts (converted or reused), parity, latency, reports.

    Work already done by an earlier target of this build on the same bytes with the same
    runtime options (conversion, runtime outputs, timing, diagnosis) is reused, not redone.
    """
    from . import bundle
    from .accelerators import missing

    profile, dataset = result.target, result.dataset
    stages = result.stages or Stages()
    result.skipped = dict(profile.skipped)
    for why, keys in profile.skipped_by_reason().items():
        progress.note(f"{profile.name}: {', '.join(keys)} not built: {why}")
    (work / "artifacts").mkdir()
    outputs: Dict[str, Dict[str, np.ndarray]] = {}
    specs = plan(result.source, profile)
    for spec in specs:
        try:
            with stages.time("convert", f"converting {spec.key}", profile.name):
                art = _convert_or_reuse(result.source, spec, dataset, profile, work / "artifacts", shared, progress)
        except Skipped as e:  # this source cannot give this artifact (a TFLite file's other recipes, ...)
            result.skipped[spec.key] = str(e)
            result.warnings.append(f"{spec.key} skipped: {e}")
            progress.warn(f"{profile.name}: {spec.key} skipped: {e}")
            continue
        except Exception as e:  # one artifact lost never takes the others down
            _fail(result, spec.key, spec.filename, spec.required, e, progress)
            continue
        if "converted_for" in art.options and art.options["converted_for"] != profile.name:
            result.reused[art.key] = f"conversion from {art.options['converted_for']}"
        try:
            with stages.time("parity", f"parity of {art.filename}", profile.name):
                result.parity[art.key], outputs[art.key] = _parity_or_reuse(result, art, reference, shared, progress)
        except Exception as e:  # converted, but does not run in its runtime on real inputs
            lost = ConversionError(f"{art.filename} does not run in its runtime: {_first_line(e)}")
            _fail(result, art.key, art.filename, art.required, lost, progress)
            shared[conversion_key(spec, profile)] = lost  # the next target would copy a file that is gone
            art.path.unlink(missing_ok=True)
            continue
        result.artifacts.append(art)
    _raise_if_a_required_format_is_lost(result, specs)
    if not result.artifacts:
        raise UsageError(
            f"no artifact of target {profile.name} can be built from this {result.source.kind} model: "
            + "; ".join(dict.fromkeys(result.skipped.values()))
        )
    with stages.time("diagnosis", "per-layer diagnosis", profile.name):
        explain_failures(result, work / "artifacts", progress, shared)
    n_runs = runs or profile.runtime.runs
    threads = host_threads(profile)
    for art in result.artifacts:
        why = missing(profile, art.format)
        if why:
            result.latency[art.key] = not_measured(art.filename, why)
            progress.note(f"{profile.name}: {art.filename} latency not measured: {why}")
            continue
        opts = runner_options(profile, art.format, accelerated=True)
        key = "timing:" + json.dumps([art.sha256, art.format, threads, profile.runtime.warmup, n_runs, opts], sort_keys=True)
        prev = shared.get(key)
        if prev is not None:  # the same bytes timed the same way for an earlier target
            result.latency[art.key] = dataclasses.replace(prev[1], artifact=art.filename)
            result.reused[art.key] = ", ".join(filter(None, [result.reused.get(art.key), f"timing from {prev[0]}"]))
            progress.note(f"{profile.name}: {art.filename} timed as for {prev[0]} (same file, same runtime options)")
            continue
        try:
            with progress.task(f"timing {art.filename} ({n_runs} runs, {threads} threads)"), stages.time(
                "timing", f"timing {art.filename}", profile.name
            ):
                result.latency[art.key] = measure(
                    str(art.path),
                    dataset.first(1),
                    fmt=art.format,
                    threads=threads,
                    warmup=profile.runtime.warmup,
                    runs=n_runs,
                    **opts,
                )
            shared[key] = (profile.name, result.latency[art.key])
        except Exception as e:  # parity ran it; a timing failure must not lose the bundle
            result.latency[art.key] = not_measured(art.filename, f"timing failed: {_first_line(e)}")
            result.warnings.append(f"{art.filename} latency not measured: timing failed: {_first_line(e)}")
    with progress.task(f"writing the {profile.name} bundle"), stages.time("bundle", "writing the bundle", profile.name):
        bundle.write(work, result, reference, outputs)


def _parity_or_reuse(
    result: BuildResult, art: Artifact, reference: Dict[str, np.ndarray], shared: Dict[str, Any], progress: Progress
) -> tuple[ParityResult, Dict[str, np.ndarray]]:
    """Run ``art`` on the held-out set, or take the outputs an earlier target got from the same bytes
    with the same runtime options; the budget comparison is this target's own either way."""
    from .accelerators import missing

    profile, dataset = result.target, result.dataset
    accelerated = missing(profile, art.format) is None
    opts = runner_options(profile, art.format, accelerated)
    key = "outputs:" + json.dumps([art.sha256, art.format, host_threads(profile), opts], sort_keys=True)
    prev = shared.get(key)
    if prev is None:
        with progress.task(f"parity of {art.filename} for {profile.name} on {dataset.n_heldout} samples"):
            outputs = heldout_outputs(art, dataset, profile)
        shared[key] = (profile.name, outputs)
    else:
        outputs = prev[1]
        result.reused[art.key] = ", ".join(filter(None, [result.reused.get(art.key), f"runtime outputs from {prev[0]}"]))
        progress.note(f"{profile.name}: {art.filename} parity outputs as for {prev[0]} (same file, same runtime options)")
    parity = compare(
        art.filename, reference, outputs, profile.budget_for(art.recipe), labels=dataset.labels, inputs_from=dataset.origin
    )
    return parity, outputs


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(e).__name__


def _fail(result: BuildResult, key: str, filename: str, required: bool, e: Exception, progress: Progress) -> None:
    """Record a lost artifact with its reason; EdgeshipErrors keep their exit code for the all-lost case."""
    reason = str(e) if isinstance(e, EdgeshipError) else f"{type(e).__name__}: {_first_line(e)}"
    code = e.exit_code if isinstance(e, EdgeshipError) else EXIT_CONVERSION
    result.failed[key] = FailedArtifact(key, filename, required, reason, code)
    progress.warn(f"{result.target.name}: {filename} not built: {reason}")
    if not required:
        result.warnings.append(f"{filename} (optional) not built: {reason}")


def _raise_if_a_required_format_is_lost(result: BuildResult, specs: Sequence[ArtifactSpec]) -> None:
    """Exit 3 (or 2 for ops with no kernel) only when no artifact of a required format was built."""
    built = {a.format for a in result.artifacts}
    for fmt in dict.fromkeys(s.format for s in specs if s.required):
        lost = [f for f in result.failed.values() if f.key.split(":")[0] == fmt]
        if fmt in built or not lost:
            continue
        first = lost[0]
        others = "; ".join(f"{f.key}: {f.reason}" for f in lost[1:])
        raise EdgeshipError(  # the first reason as it was raised: it names the op and the fix
            first.reason + (f" (no other {fmt} artifact was built either: {others})" if others else ""),
            exit_code=first.exit_code,
        )


def conversion_key(spec: ArtifactSpec, profile: TargetProfile) -> str:
    """Two targets with equal keys get the same file (converted once per build)."""
    return json.dumps([spec.format, spec.recipe, conversion_options(spec, profile)], sort_keys=True)


def _convert_or_reuse(
    source: Source, spec: ArtifactSpec, dataset: Dataset, profile: TargetProfile, dest: Path, shared: Dict[str, Any], progress: Progress
) -> Artifact:
    """Convert ``spec``, or copy the file an earlier target of this build already converted the same way."""
    key = conversion_key(spec, profile)
    prev = shared.get(key)
    if isinstance(prev, BaseException):  # an earlier target's identical conversion failed: same reason, no retry
        raise prev
    if prev is not None:
        path = dest / spec.filename
        shutil.copy2(prev.path, path)
        progress.note(f"{profile.name}: {spec.key} is the same file as {prev.options['converted_for']}'s, reused")
        return dataclasses.replace(prev, path=path, required=spec.required, notes=list(prev.notes), options=dict(prev.options))
    try:
        with progress.task(f"converting {spec.key}" + (" (calibrating)" if "int8" in spec.recipe else "")):
            art = convert(source, spec, dataset, profile, dest)
    except Exception as e:
        if not isinstance(e, Skipped):
            shared[key] = e
        raise
    art.options["converted_for"] = profile.name
    shared[key] = art
    return art


def not_measured(artifact: str, reason: str) -> LatencyResult:
    """A latency entry that says it was not measured, and why (never an estimate)."""
    return LatencyResult.not_measured(artifact, reason)

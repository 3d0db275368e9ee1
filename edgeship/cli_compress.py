"""`edgeship distill` and the pruning summary of `edgeship build --prune`: thin Click over compress.py."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import click

from .cli_inputs import input_options, pop_inputs


def print_pruning(result: Any, report: Any) -> None:
    """Sparsity, accuracy before/after, each artifact's size and gzip size, and XNNPACK's sparse path."""
    from rich.console import Console

    from .build import host_threads
    from .compress import gzip_size, xnnpack_on_off

    console = Console() if sys.stdout.isatty() else Console(width=130)
    console.print(
        f"pruned to {report.reached:.1%} zero weights (target {report.target:.0%}) in {report.seconds} s; held-out accuracy "
        f"{report.accuracy_before:.2%} before, {report.accuracy_after:.2%} after ({report.epochs} fine-tuning epochs on {report.fine_tuned_on})"
    )
    for a in result.artifacts:
        console.print(f"  {a.filename}: {a.size / 1024:.1f} KiB, {gzip_size(a.path) / 1024:.1f} KiB gzipped (dense storage: the zeros pay off compressed)")
    fp32 = next((a for a in result.artifacts if a.format == "tflite" and a.recipe == "fp32"), None)
    if report.xnnpack_sparse.startswith("may apply") and fp32 is not None:
        t = xnnpack_on_off(fp32.path, result.dataset.first(1), host_threads(result.target))
        console.print(f"  XNNPACK on/off for {fp32.filename}: p50 {t['xnnpack_on_p50_ms']:.3f} ms / {t['xnnpack_off_p50_ms']:.3f} ms")
    else:
        console.print(f"  XNNPACK sparse inference {report.xnnpack_sparse}; not measured")


@click.command()
@click.option("--sample", default="digits", show_default=True, help="Built-in Keras sample used as the teacher when --model is not given (digits, sentiment).")
@click.option("--student", "student_path", default=None, metavar="ARCH.keras", help="The student's architecture (a .keras file; its weights are re-initialised). Default: the teacher at --width.")
@click.option("--width", type=float, default=0.25, show_default=True, help="Without --student: the teacher's hidden units/filters scaled by this.")
@click.option("--temperature", "-T", type=float, default=2.0, show_default=True, help="Softening temperature of both models' outputs.")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Weight of the hard-label loss; 1 - alpha goes to KL(teacher_T || student_T) x T^2.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Training epochs of the student (and of its from-scratch twin).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--learning-rate", type=float, default=2e-3, show_default=True, help="Adam's learning rate.")
@click.option("--seed", type=int, default=1234, show_default=True, help="Initial weights and batch order (the twin shares both).")
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True, help="Timed runs per model (TFLite fp32 on this host).")
@click.option("--out", "-o", default=None, help="Folder for student.keras, scratch.keras and distill.json (default dist/<teacher>-distilled).")
@input_options
def distill(sample: str, student_path: Optional[str], width: float, temperature: float, alpha: float, epochs: int, batch_size: int,
            learning_rate: float, seed: int, runs: int, out: Optional[str], **inputs: Any) -> None:
    """Teach a smaller student from a teacher (soft targets at temperature T, KL x T^2, mixed with the
    hard labels by alpha); compare teacher, student and the student trained from scratch on the same budget."""
    from .compress import distill as run_distill, labelled_keras, save_json, width_reduced
    from .errors import UsageError
    from .progress import Progress

    progress = Progress()
    given = pop_inputs(inputs)
    source, dataset, _, train = labelled_keras(given, sample, False, progress, "the teacher must be", "distillation needs labelled data")
    if student_path:
        import keras

        try:
            arch = keras.models.load_model(student_path, compile=False)
        except Exception as e:
            raise UsageError(f"cannot load the student architecture {student_path}: {str(e).splitlines()[0][:200]}") from None
    else:
        arch = width_reduced(source.model, width)
    with progress.task(f"distilling {source.name} into a {arch.count_params()}-parameter student, and its from-scratch twin ({epochs} epochs each)"):
        student, scratch, report = run_distill(
            source.model, arch, train, dataset.heldout, dataset.labels, temperature=temperature, alpha=alpha,
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
        )
    dest = Path(out or Path("dist") / f"{source.name}-distilled")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        student.save(work / "student.keras")
        scratch.save(work / "scratch.keras")
        import numpy as np

        name = source.inputs[0].name
        np.savez_compressed(work / "heldout.npz", **{name: dataset.heldout[name]}, labels=dataset.labels)
        with progress.task(f"TFLite fp32 size and latency of the three models ({runs} runs each, interleaved)"):
            sizes = measure_models({"teacher": source.model, "student": student, "scratch": scratch}, dataset.first(1), runs)
        for key in ("teacher", "student", "scratch"):
            getattr(report, key).update(sizes[key])
        save_json(work / "distill.json", report.to_dict())
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _print_distill(report, dest)


def measure_models(models: Dict[str, Any], feed: Dict[str, Any], runs: int) -> Dict[str, Dict[str, Any]]:
    """TFLite fp32 bytes and host p50 of each Keras model, timed in interleaved rounds."""
    import numpy as np

    from .compress import gzip_size
    from .convert.tflite import frozen_converter
    from .runner.latency import measure
    from .sources.keras import keras_source

    out: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for key, model in models.items():
            p = Path(tmp) / f"{key}.tflite"
            p.write_bytes(frozen_converter(keras_source(model, key, None, ""))[0].convert())
            paths[key] = p
            out[key] = {"tflite_fp32_bytes": p.stat().st_size, "tflite_fp32_gzip_bytes": gzip_size(p)}
        p50s: Dict[str, list] = {k: [] for k in models}
        for _ in range(3):
            for key, p in paths.items():
                p50s[key].append(measure(str(p), feed, fmt="tflite", threads=1, runs=runs).p50_ms)
        for key in models:
            out[key]["p50_ms"] = float(np.median(p50s[key]))
    return out


def _print_distill(report: Any, dest: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"distillation: T={report.temperature}, alpha={report.alpha}, {report.epochs} epochs, seed {report.seed}")
    for col in ("model", "parameters", "held-out accuracy", "TFLite fp32 KiB", "gzipped KiB", "p50 ms (1 thread)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for key, label in (("teacher", "teacher"), ("student", "student (distilled)"), ("scratch", "student from scratch")):
        d = getattr(report, key)
        table.add_row(label, str(d["parameters"]), f"{d['accuracy']:.2%}", f"{d['tflite_fp32_bytes'] / 1024:.1f}",
                      f"{d['tflite_fp32_gzip_bytes'] / 1024:.1f}", f"{d['p50_ms']:.4f}")
    console = Console() if sys.stdout.isatty() else Console(width=130)
    console.print(table)
    console.print(f"trained on {report.trained_on}; wrote {dest}/student.keras, scratch.keras, distill.json, heldout.npz")
    console.print(f"build the student like any model: edgeship build --model {dest}/student.keras --data {dest}/heldout.npz")

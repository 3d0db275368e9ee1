"""Accuracy, size, compressed size and latency of the samples: fp32, int8, pruned, pruned + int8, distilled student.

Each variant goes through the normal arm64 build (TFLite artifacts; parity on the sample's
held-out split gives the accuracy). Sizes are the .tflite bytes and their gzip -9 bytes (TFLite
stores weights dense, so pruning's zeros show only compressed). p50 is batch 1 on this host,
the median of --repeats measurements taken in interleaved rounds over all artifacts of a sample.

    python benchmarks/compression.py [--samples digits,sentiment,cnn-torch] [--sparsity 0.8] [--repeats 5] [--runs 300]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(loaded: Any, out: Path) -> Any:
    from edgeship.build import run_builds

    return run_builds("arm64", out=str(out), runs=5, loaded=loaded)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default="digits,sentiment,cnn-torch")
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()

    from edgeship import compress as C
    from edgeship.bundle import host_facts
    from edgeship.runner.latency import measure
    from edgeship.sources import sha256_file
    from edgeship.sources.keras import keras_source
    from edgeship.train import train_sample

    host = host_facts()
    print(f"host: {host.get('cpu') or host.get('machine')} ({os.cpu_count()} cores); batch 1, 1 thread; "
          f"p50 = median of {args.repeats} interleaved measurements of {args.runs} runs")
    for name in args.samples.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            tmpdir = Path(tmp)
            try:
                source, dataset, training = train_sample(name)
            except Exception as e:  # cnn-torch without torch: say so, go on
                print(f"\n{name}: not measured: {e}")
                continue
            rows: List[Dict[str, Any]] = []

            def add(label: str, result: Any) -> None:
                for a in result.artifacts:
                    if a.format != "tflite":
                        continue
                    p = result.parity[a.key].outputs[0]
                    rows.append({"variant": f"{label} {a.recipe}", "path": a.path, "accuracy": p.accuracy,
                                 "size": a.size, "gzip": C.gzip_size(a.path), "p50": []})

            add("original", build((source, dataset, training), tmpdir / "orig"))
            notes = []
            if source.kind == "keras":
                train = C.training_data(None, name, dataset)
                pruned, rep = C.prune_model(source.model, train, dataset.heldout, dataset.labels, args.sparsity)
                pp = tmpdir / "pruned.keras"
                pruned.save(pp)
                add(f"pruned {rep.reached:.0%}", build((keras_source(pruned, f"{name}_pruned", pp, sha256_file(pp)), dataset, None), tmpdir / "pruned"))
                notes.append(f"pruning: {rep.reached:.1%} zeros, accuracy {rep.accuracy_before:.2%} -> {rep.accuracy_after:.2%} "
                             f"({rep.epochs} fine-tuning epochs, {rep.seconds} s); XNNPACK sparse inference {rep.xnnpack_sparse}")
                student, scratch, drep = C.distill(source.model, C.width_reduced(source.model, 0.25), train, dataset.heldout, dataset.labels)
                sp = tmpdir / "student.keras"
                student.save(sp)
                add("student", build((keras_source(student, f"{name}_student", sp, sha256_file(sp)), dataset, None), tmpdir / "student"))
                notes.append(f"distillation (T={drep.temperature}, alpha={drep.alpha}, {drep.epochs} epochs, width 0.25): "
                             f"teacher {drep.teacher['parameters']} params {drep.teacher['accuracy']:.2%}, student "
                             f"{drep.student['parameters']} params {drep.student['accuracy']:.2%}, from-scratch twin {drep.scratch['accuracy']:.2%}")
            else:
                notes.append("pruned and student: not built (pruning and distillation take Keras models; this sample is PyTorch)")
            feed = dataset.first(1)
            for _ in range(args.repeats):  # interleaved: every artifact once per round
                for r in rows:
                    r["p50"].append(measure(str(r["path"]), feed, fmt="tflite", threads=1, runs=args.runs).p50_ms)
            print(f"\n{name} ({source.kind}; held-out {dataset.n_heldout} samples)")
            print(f"{'variant':<22} {'accuracy':>9} {'size KiB':>9} {'gzip KiB':>9} {'p50 ms':>8}")
            for r in rows:
                acc = f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-"
                print(f"{r['variant']:<22} {acc:>9} {r['size'] / 1024:>9.1f} {r['gzip'] / 1024:>9.1f} {statistics.median(r['p50']):>8.4f}")
            for n in notes:
                print(f"  {n}")


if __name__ == "__main__":
    main()

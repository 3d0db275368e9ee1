"""What a multi-target build saves: `--target all` in one build against one build per target.

Prints, for the sample model and every built-in target, the wall time of one multi-target
build and of the same targets built one by one, and how many artifact files were converted
versus reused. The sample model is trained (or loaded from the cache) before timing starts.

    python benchmarks/bench_targets.py [--targets all] [--runs 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="all", help="a --target value: names, .toml paths, comma-separated, or all")
    ap.add_argument("--runs", type=int, default=20, help="timed latency runs per artifact (the same in both builds)")
    args = ap.parse_args()

    from edgeship.build import load_source, run_build, run_builds
    from edgeship.bundle import host_facts
    from edgeship.progress import Progress
    from edgeship.targets import target_refs

    loaded = load_source(None, "digits", False, Progress(enabled=False))  # train or load once, untimed
    refs = target_refs(args.targets)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        together = run_builds(refs, out=str(Path(tmp) / "all"), runs=args.runs, loaded=loaded)
        together_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for ref in refs:
            run_build(ref, out=str(Path(tmp) / "one" / ref), runs=args.runs)
        apart_s = time.perf_counter() - t0
    arts = [(r.target.name, a) for r in together for a in r.artifacts]
    converted = [(t, a) for t, a in arts if a.options.get("converted_for") == t]
    h = host_facts()
    print(f"machine: {h['cpu']}, {h['cores']} cores, {h['machine']}")
    print(f"targets: {', '.join(refs)}; {len(arts)} artifacts in {len(together)} bundles")
    print(f"converted {len(converted)}, reused {len(arts) - len(converted)}:")
    for t, a in arts:
        how = "converted" if a.options.get("converted_for") == t else f"reused from {a.options.get('converted_for')}"
        print(f"  {t:>8}  {a.key:<20} {how}")
    print(f"one multi-target build: {together_s:.1f} s; one build per target: {apart_s:.1f} s "
          f"({apart_s / together_s:.2f}x)")
    print("  (both in one process: the separate builds reload the cached model but share the ONNX export cache,"
          " so separate CLI runs would cost more)")


if __name__ == "__main__":
    main()

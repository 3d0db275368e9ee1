"""Robustness: run a corpus of bad inputs through the real commands and print the tally.

    python benchmarks/robustness.py                 # builds the sample bundle once (cached model), then ~130 cases
    python benchmarks/robustness.py --bundle dist/digits-arm64 --only profiles,reports

The corpus is generated here (tests/badinputs.py): damaged and crafted models, data, profiles,
reports, manifests and bundles, the runner's counts, device addresses, sample names, interrupts and
a stale partial of a killed build. Each case runs in a child process in its own sandbox (HOME,
TMPDIR, working folder) and is classed as clean (documented exit code, one error line, nothing
written outside its folder), traceback, crash (a signal or a hang) or wrong (anything else).
Goal: every case clean.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import badinputs as bi  # noqa: E402


def sample_bundle(where: Path) -> Path:
    from edgeship.build import run_build

    out = where / "digits-arm64"
    run_build(target="arm64", out=str(out), runs=20)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None, help="an existing digits-arm64 bundle (default: build one)")
    ap.add_argument("--only", default="", help="comma-separated groups: " + "profiles,reports,data,models,manifests,crashes,security,interrupts,disk,fuzz")
    ap.add_argument("--fuzz", type=int, default=60, help="seeded random mutations of model files and manifests (default 60)")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every case")
    args = ap.parse_args()
    os.environ.setdefault("EDGESHIP_CACHE_DIR", str(Path.home() / ".cache" / "edgeship"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    only = {g for g in args.only.split(",") if g}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeship-robustness-") as tmp:
        tmp_path = Path(tmp)
        bundle = args.bundle.resolve() if args.bundle else sample_bundle(tmp_path)
        from edgeship.train import train_sample

        _, _, metrics = train_sample("digits")
        keras_model = Path(metrics["cache_path"])
        results = []
        n = 0

        def sandbox() -> bi.Sandbox:
            nonlocal n
            n += 1
            return bi.Sandbox(tmp_path / f"case{n:03d}")

        makers = [
            ("profiles", lambda sb: bi.profile_cases(sb)),
            ("reports", lambda sb: bi.report_cases(sb, bundle / "report.json")),
            ("data", lambda sb: bi.data_cases(sb, keras_model)),
            ("models", lambda sb: bi.model_cases(sb, bundle / "artifacts" / "model_int8.tflite", bundle / "artifacts" / "model_fp32.onnx")),
            ("manifests", lambda sb: bi.manifest_cases(sb, bundle)),
            ("crashes", lambda sb: bi.runner_cases(sb, bundle)),
            ("security", lambda sb: bi.security_cases(sb, bundle)),
            ("interrupts", lambda sb: bi.interrupt_cases(sb) + [bi.stale_partial_case(sb)]),
            ("disk", lambda sb: [c for c in [bi.disk_full_case(sb)] if c is not None]),  # root only (a tmpfs)
            ("fuzz", lambda sb: bi.fuzz_cases(sb, bundle, args.fuzz)),
        ]
        for group, make in makers:
            if only and group not in only:
                continue
            sb = sandbox()  # one sandbox per group; each case is judged on what it changed there
            for case in make(sb):
                r = bi.run_case(case, sb)
                results.append(r)
                if args.verbose or r.outcome != "clean":
                    print(f"  [{r.outcome:9}] {case.name}: exit {r.code} ({r.seconds:.1f} s){': ' + r.why if r.why else ''}", flush=True)
        by_group = defaultdict(list)
        for r in results:
            by_group[r.case.group].append(r)
        print()
        print(f"{'group':<14}" + "".join(f"{k:>10}" for k in ("tried", *bi.OUTCOMES)))
        for g, rs in by_group.items():
            t = bi.tally(rs)
            print(f"{g:<14}" + "".join(f"{t[k]:>10}" for k in ("tried", *bi.OUTCOMES)))
        t = bi.tally(results)
        print(f"{'total':<14}" + "".join(f"{t[k]:>10}" for k in ("tried", *bi.OUTCOMES)))
        print(f"\n{t['clean']} of {t['tried']} bad inputs clean in {time.perf_counter() - t0:.0f} s "
              f"({os.cpu_count()} cores, {os.uname().machine}; shared machine: times are indicative)")
        return 0 if t["clean"] == t["tried"] else 1


if __name__ == "__main__":
    sys.exit(main())

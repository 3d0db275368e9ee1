"""Add device sections to a bundle's reports: report data gets a "devices" list, one entry per device.

The reports are re-rendered from that data (report.write_all), device outputs land in
devices/<name>/, and the manifest's file list is updated, each file replaced atomically.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from ..sources import sha256_file


def slug(label: str) -> str:
    """A folder name for a device label: ssh://pi@raspberrypi:22 -> pi_raspberrypi_22."""
    s = re.sub(r"^[a-z]+://", "", label)
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_.")  # never '.', '..' or hidden
    return s or "device"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def record_devices(bundle: Path, sections: List[Dict[str, Any]]) -> List[Path]:
    """Merge ``sections`` into the bundle's report data (a device deployed again replaces its old
    section), re-render every report, store device outputs, refresh the manifest's hashes.

    Everything is first written into a hidden folder inside the bundle, then renamed into place,
    manifest last: a failure (a full disk) leaves the bundle as it was, with no device outputs that
    no manifest or report mentions. The sections' temporary outputs are removed either way."""
    from .. import report
    from ..bundle import inside, load_manifest
    from ..errors import UsageError
    from ..runner.bundlefmt import DEVICES_DIR, MANIFEST

    bundle = Path(bundle)
    try:
        report_json = inside(bundle, "report.json", "report")
        if not report_json.is_file():
            raise UsageError(f"{bundle} has no report.json to add device sections to; rebuild it with 'edgeship build'")
        try:
            data = json.loads(report_json.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise UsageError(f"{report_json} is not valid JSON ({e}); rebuild the bundle") from None
        if not isinstance(data, dict) or not isinstance(data.get("devices", []), list):
            raise UsageError(f"{report_json}: expected a report object with a 'devices' list; rebuild the bundle")
        manifest = load_manifest(bundle)
        devices_dir = inside(bundle, DEVICES_DIR, "devices folder")
        with tempfile.TemporaryDirectory(dir=bundle, prefix=".record-") as tmp:
            stage = Path(tmp)
            moves: List[tuple] = []  # (staged path, final path)
            by_label = {d.get("device"): d for d in data.get("devices", []) if isinstance(d, dict)}
            for sec in sections:
                sec = dict(sec)
                outputs = sec.pop("_outputs", None)
                if outputs and Path(outputs).is_dir():
                    name = slug(sec["device"])
                    shutil.copytree(outputs, stage / DEVICES_DIR / name)
                    moves.append((stage / DEVICES_DIR / name, devices_dir / name))
                    sec["outputs"] = f"{DEVICES_DIR}/{name}"
                by_label[sec["device"]] = sec
            data["devices"] = list(by_label.values())
            for p in report.write_all(data, stage):
                moves.append((p, inside(bundle, p.name, "report")))
            files, root = manifest["files"], bundle.resolve()
            for src, dst in moves:
                if src.is_dir():  # a device deployed again: its old outputs go, with their entries
                    prefix = f"{dst.relative_to(root).as_posix()}/"
                    for rel in [r for r in files if r.startswith(prefix)]:
                        del files[rel]
                pairs = [(f, dst / f.relative_to(src)) for f in sorted(src.rglob("*")) if f.is_file()] if src.is_dir() else [(src, dst)]
                for f, final in pairs:
                    files[final.relative_to(root).as_posix()] = {"sha256": sha256_file(f), "size": f.stat().st_size}
            manifest["devices"] = [{k: d.get(k) for k in ("device", "passed", "error", "outputs")} for d in data["devices"]]
            (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
            # commit: renames only (no new space needed), the manifest last
            for src, dst in moves:
                if src.is_dir():
                    devices_dir.mkdir(exist_ok=True)
                    if dst.exists():
                        os.replace(dst, stage / f"old-{dst.name}")
                os.replace(src, dst)
            os.replace(stage / MANIFEST, inside(bundle, MANIFEST, "manifest"))
        return [dst for _, dst in moves]
    finally:
        for sec in sections:
            if sec.get("_outputs"):
                shutil.rmtree(Path(sec["_outputs"]).parent, ignore_errors=True)

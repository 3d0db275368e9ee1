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
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "device"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def record_devices(bundle: Path, sections: List[Dict[str, Any]]) -> List[Path]:
    """Merge ``sections`` into the bundle's report data (a device deployed again replaces its old
    section), re-render every report, store device outputs, refresh the manifest's hashes."""
    from .. import report

    bundle = Path(bundle)
    if not (bundle / "report.json").is_file():
        from ..errors import UsageError

        raise UsageError(f"{bundle} has no report.json to add device sections to; rebuild it with 'edgeship build'")
    data = json.loads((bundle / "report.json").read_text())
    manifest = json.loads((bundle / "manifest.json").read_text())
    changed: List[Path] = []
    by_label = {d["device"]: d for d in data.get("devices", [])}
    for sec in sections:
        sec = dict(sec)
        outputs = sec.pop("_outputs", None)
        dest = bundle / "devices" / slug(sec["device"])
        if outputs and Path(outputs).is_dir():
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(exist_ok=True)
            shutil.copytree(outputs, dest)
            shutil.rmtree(Path(outputs).parent, ignore_errors=True)
            sec["outputs"] = f"devices/{dest.name}"
            changed += sorted(p for p in dest.rglob("*") if p.is_file())
        by_label[sec["device"]] = sec
    data["devices"] = list(by_label.values())
    with tempfile.TemporaryDirectory(dir=bundle, prefix=".reports-") as tmp:
        for p in report.write_all(data, Path(tmp)):
            os.replace(p, bundle / p.name)
            changed.append(bundle / p.name)
    for p in changed:
        manifest["files"][str(p.relative_to(bundle))] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    manifest["devices"] = [{k: d.get(k) for k in ("device", "passed", "error", "outputs")} for d in data["devices"]]
    _write_atomic(bundle / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    return changed

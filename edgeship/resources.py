"""Where the data files that ship with edgeship live (target profiles, sample models)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _data(name: str) -> Path:
    """A source checkout (or editable install) first, then a wheel install's <prefix>/share/edgeship."""
    here = ROOT / name
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "edgeship" / name


def targets_dir() -> Path:
    return _data("targets")


def sample_models_dir() -> Path:
    return _data("sample_models")


def cache_dir() -> Path:
    """Trained sample models are cached here, keyed by recipe and data ($EDGESHIP_CACHE_DIR)."""
    env = os.environ.get("EDGESHIP_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeship"

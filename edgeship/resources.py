"""Where the data files that ship with edgeship live (target profiles, sample models)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def targets_dir() -> Path:
    return ROOT / "targets"


def sample_models_dir() -> Path:
    return ROOT / "sample_models"


def cache_dir() -> Path:
    """Trained sample models are cached here, keyed by recipe and data ($EDGESHIP_CACHE_DIR)."""
    env = os.environ.get("EDGESHIP_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeship"

"""The sample model trains on the real digits data, reaches its accuracy, and is cached."""
from __future__ import annotations

import numpy as np

from edgeship.train import sample_dataset, sample_module, train_sample


def test_sample_reaches_97_percent_on_held_out(sample):
    source, dataset, metrics = sample
    assert metrics["test_accuracy"] >= 0.97
    # recompute from the model itself rather than trusting the stored number
    probs = source.predict(dataset.heldout)["probs"]
    assert np.mean(probs.argmax(axis=1) == dataset.labels) >= 0.97
    assert metrics["test_samples"] == len(dataset.labels) > 300


def test_second_call_uses_the_cache(sample):
    source, _, _ = sample
    again, _, metrics = train_sample("digits")
    assert metrics["cached"] is True
    assert again.sha256 == source.sha256


def test_calibration_and_held_out_do_not_overlap():
    mod = sample_module("digits")
    ds, train = sample_dataset(mod)
    held = {a.tobytes() for a in ds.heldout["image"]}
    calib = {a.tobytes() for a in ds.calibration["image"]}
    trained = {a.tobytes() for a in train["x"]}
    # a few digits images are exact duplicates in the data set itself; the split is by index
    assert len(held & calib) <= 2 and len(held & trained) <= 2
    assert sorted(np.unique(ds.labels)) == list(range(10))


def test_train_command_reports_accuracy(sample):
    from .conftest import run_cli

    proc = run_cli("train")
    assert proc.returncode == 0, proc.stderr
    assert "held-out accuracy" in proc.stdout and "cached" in proc.stdout


def test_unknown_sample_is_a_usage_error():
    from .conftest import run_cli

    proc = run_cli("train", "--sample", "digitz")
    assert proc.returncode == 2 and "unknown sample model 'digitz'" in proc.stderr

"""The text sample: real review snippets, Keras' tokenizer reproduced on the device, token ids kept integer."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeship.data import generated_dataset
from edgeship.parity import compare
from edgeship.runner.text import Tokenizer, words
from edgeship.sources import Source, TensorSpec

SENTIMENT_FLOOR = 0.70  # README: held-out accuracy floor (57.8 % of the snippets are positive)

TRICKY = [
    "",
    "   ",
    "A GREAT film!!! Truly, madly... great?",
    "don't-stop  believing\t(tab)\nnewline\r\n end",
    "Ça a été UNE ÉNORME déception — vraiment.",  # non-ASCII letters: TF lowercases ASCII only
    "émoji 🎬 and numbers 1,000 3.5/5 #1 @critic [brackets] {braces} ~tilde~ `back` 'single' \"double\"",
    "word " * 80,  # longer than the sequence: truncated
    "zzzunknownword qqqxx the the the",
    "\u00a0non-breaking\u00a0space\u2003em space",  # not ASCII whitespace: stays inside the word
]


@pytest.fixture(scope="module")
def sentiment(cache_dir):
    from edgeship.train import train_sample

    return train_sample("sentiment")


@pytest.mark.slow
def test_device_token_ids_equal_keras_text_vectorization(sentiment):
    from edgeship.train import sample_module

    mod = sample_module("sentiment")
    texts, labels = mod.load_texts()
    _, dataset, _ = sentiment
    spec = dataset.preprocessing
    strings = texts[:300] + texts[-300:] + TRICKY
    keras_ids = np.asarray(mod.vectorizer()(np.array(strings, dtype=object)))
    device_ids = Tokenizer(json.loads(json.dumps(spec)))(strings)  # the vocabulary as it travels: JSON
    assert device_ids.dtype == np.int32
    assert device_ids.shape == keras_ids.shape
    mismatched = [s for s, a, b in zip(strings, device_ids, keras_ids) if not np.array_equal(a, b)]
    assert not mismatched, mismatched[:3]
    assert (device_ids[-2] == 1).sum() >= 2  # unknown words are the OOV id, not dropped


def test_tokenizer_rules_without_tensorflow():
    spec = {"kind": "text", "vocabulary": ["", "[UNK]", "good", "film"], "sequence_length": 5}
    assert words("A GOOD, good film!", spec) == ["a", "good", "good", "film"]
    assert Tokenizer(spec)(["A GOOD, good film!", ""]).tolist() == [[1, 2, 2, 3, 0], [0, 0, 0, 0, 0]]


@pytest.mark.slow
def test_sentiment_is_well_above_chance_on_held_out_sentences(sentiment):
    source, dataset, metrics = sentiment
    tokens = dataset.heldout["tokens"]
    assert tokens.dtype == np.int32 and source.inputs[0].dtype == "int32"
    assert dataset.calibration["tokens"].dtype == np.int32
    probs = source.predict(dataset.heldout)[source.outputs[0].name].reshape(-1)
    acc = float(np.mean((probs >= 0.5) == dataset.labels.astype(bool)))
    majority = max(np.mean(dataset.labels), 1 - np.mean(dataset.labels))
    assert acc >= SENTIMENT_FLOOR > majority + 0.1
    assert abs(acc - metrics["test_accuracy"]) < 1e-6
    assert len(dataset.labels) > 2000


@pytest.mark.slow
def test_sentiment_builds_for_arm64_and_predicts_text_on_the_device(sentiment, tmp_path):
    from edgeship.build import run_builds

    result = run_builds("arm64", out=str(tmp_path / "b"), runs=5, loaded=sentiment)[0]
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["preprocessing"]["kind"] == "text" and len(manifest["preprocessing"]["vocabulary"]) == 10000
    for art in manifest["artifacts"]:  # token ids stay int32 in every artifact
        assert art["inputs"][0]["dtype"] == "int32", art
    int8 = result.parity["tflite:int8"].outputs[0]
    assert int8.threshold == 0.5 and int8.top1_agreement is not None and int8.accuracy is not None
    assert int8.accuracy >= SENTIMENT_FLOOR - 0.02  # int8 of the embedding: recorded, not lost
    text = "A wonderful, moving film with a great cast."
    out = subprocess.run(
        [sys.executable, str(result.bundle / "edgeship-runner.pyz"), "predict", text, "Dull, lifeless and far too long.",
         "--artifact", "model_fp32.tflite", "--json", "-"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    preds = json.loads(out.stdout)["predictions"]
    assert [p["top"][0]["label"] for p in preds] == ["positive", "negative"]
    ids = Tokenizer(manifest["preprocessing"])([text])[0]
    assert preds[0]["tokens"] == [int(t) for t in ids if t]


def test_one_sigmoid_unit_compares_thresholded_predictions():
    ref = {"p": np.array([[0.1], [0.6], [0.9], [0.4]], np.float32)}
    out = {"p": np.array([[0.2], [0.45], [0.95], [0.3]], np.float32)}
    m = compare("x", ref, out, {"top1_agreement": 0.9}, labels=np.array([0, 1, 1, 1])).outputs[0]
    assert m.threshold == 0.5
    assert m.top1_agreement == 0.75  # the second sample crossed 0.5
    assert m.reference_accuracy == 0.75 and m.accuracy == 0.5 and m.accuracy_drop == 0.25


def test_generated_token_ids_keep_their_dtype_and_range():
    src = Source("t", "onnx", None, "", [TensorSpec("ids", [None, 8], "int64"), TensorSpec("x", [None, 2], "float32")], [])
    ds = generated_dataset(src)
    ids = ds.heldout["ids"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 256 and len(np.unique(ids)) > 10
    assert ds.calibration["x"].dtype == np.float32


def test_validate_generates_token_ids_inside_the_vocabulary():
    from edgeship.runner.runners import TensorInfo
    from edgeship.validate import generated_inputs

    feed, how = generated_inputs([TensorInfo("tokens", [1, 48], "int32")], highs={"tokens": 100})
    assert feed["tokens"].dtype == np.int32 and 0 <= feed["tokens"].min() and feed["tokens"].max() < 100
    assert "[0, 99]" in how

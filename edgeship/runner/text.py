"""Text -> token ids on the device, with the standard library and NumPy only.

The rules are Keras ``TextVectorization``'s defaults, reproduced byte for byte so that a
bundle's model sees on the device the ids it was trained on: ``tf.strings.lower`` without an
encoding (ASCII letters only), the punctuation regex of ``lower_and_strip_punctuation``,
``tf.strings.split`` on ASCII whitespace, index 0 for padding, 1 for out-of-vocabulary words,
padding or truncating at the end to ``sequence_length``. The vocabulary and these rules
travel as data in the manifest's ``preprocessing`` (``kind = "text"``).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence

import numpy as np

# keras/src/layers/preprocessing/text_vectorization.py, standardize="lower_and_strip_punctuation"
PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
# tf.strings.split without a separator: absl's ASCII whitespace
WHITESPACE = " \t\n\v\f\r"
_SPLIT = re.compile("[" + re.escape(WHITESPACE) + "]+")
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation", None)


def standardize(text: str, how: Any = "lower_and_strip_punctuation") -> str:
    if how not in STANDARDIZE:
        raise ValueError(f"unknown standardize rule {how!r}; known: {', '.join(str(s) for s in STANDARDIZE)}")
    if how in ("lower", "lower_and_strip_punctuation"):
        text = text.translate(_ASCII_LOWER)
    if how in ("strip_punctuation", "lower_and_strip_punctuation"):
        text = PUNCTUATION.sub("", text)
    return text


def words(text: str, spec: Dict[str, Any]) -> List[str]:
    t = standardize(text, spec.get("standardize", "lower_and_strip_punctuation"))
    if spec.get("split", "whitespace") != "whitespace":
        raise ValueError(f"unknown split rule {spec.get('split')!r}; this runner knows 'whitespace'")
    return [w for w in _SPLIT.split(t.strip(WHITESPACE)) if w]


class Tokenizer:
    """A bundle's text preprocessing: strings -> an [n, sequence_length] array of token ids."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        vocab = spec.get("vocabulary")
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise ValueError("the text preprocessing has no vocabulary (a list of strings)")
        self.spec = spec
        self.pad = int(spec.get("pad_index", 0))
        self.oov = int(spec.get("oov_index", 1))
        self.length = int(spec["sequence_length"])
        self.dtype = np.dtype(spec.get("dtype", "int32"))
        # Index 0 (padding, '') and 1 ('[UNK]') are never looked up as words.
        self.index = {w: i for i, w in enumerate(vocab) if i not in (self.pad, self.oov)}

    def ids(self, text: str) -> List[int]:
        return [self.index.get(w, self.oov) for w in words(text, self.spec)]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.full((len(texts), self.length), self.pad, dtype=self.dtype)
        for row, text in enumerate(texts):
            ids = self.ids(text)[: self.length]
            out[row, : len(ids)] = ids
        return out


def is_text(spec: Any) -> bool:
    return isinstance(spec, dict) and spec.get("kind") == "text"

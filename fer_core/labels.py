"""Label sets. The order of each list is the model's output column order."""

from __future__ import annotations

import numpy as np

from fer_core.errors import FerError

FER7 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MERGED6 = ("angry", "fear", "happy", "sad", "surprise", "neutral")  # disgust folded into angry
FERPLUS8 = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")

LABEL_SETS: dict[str, tuple[str, ...]] = {"fer7": FER7, "merged6": MERGED6, "ferplus8": FERPLUS8}

# Synonyms used to map between sets by emotion meaning.
_CANON = {
    "angry": "angry", "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy", "happiness": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise",
    "neutral": "neutral",
    "contempt": "contempt",
}
# Where an emotion goes when the target set lacks it.
_FOLD = {"merged6": {"disgust": "angry", "contempt": "angry"}, "fer7": {"contempt": "disgust"},
         "ferplus8": {}}

EMOJI = {"angry": "😠", "disgust": "🤢", "fear": "😨", "happy": "😄", "sad": "😢",
         "surprise": "😲", "neutral": "😐", "contempt": "😒"}


def label_set(name: str) -> tuple[str, ...]:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise FerError(f"unknown label set {name!r}; expected one of {sorted(LABEL_SETS)}",
                       where="label_set") from None


def canonical(name: str) -> str:
    """Canonical emotion name ('happiness' -> 'happy')."""
    try:
        return _CANON[name.strip().lower()]
    except KeyError:
        raise FerError(f"unknown emotion {name!r}; expected one of {sorted(set(_CANON))}",
                       where="label") from None


def detect_label_set(names) -> str:
    """Name of the label set whose labels are exactly ``names`` (in order)."""
    names = tuple(names)
    for key, value in LABEL_SETS.items():
        if value == names:
            return key
    raise FerError(f"labels {list(names)} match no known label set", where="labels")


def remap_table(source: str, target: str) -> np.ndarray:
    """Integer array t with t[i] = index in ``target`` of label i of ``source``."""
    src, dst = label_set(source), label_set(target)
    dst_canon = [canonical(n) for n in dst]
    table = []
    for name in src:
        c = canonical(name)
        c = _FOLD[target].get(c, c) if c not in dst_canon else c
        if c not in dst_canon:
            raise FerError(f"label {name!r} of {source} has no counterpart in {target}",
                           where="labels")
        table.append(dst_canon.index(c))
    return np.asarray(table, dtype=np.int64)


def remap_labels(labels: np.ndarray, source: str, target: str) -> np.ndarray:
    """Map integer labels from one set to another (e.g. fer7 -> merged6)."""
    return remap_table(source, target)[np.asarray(labels, dtype=np.int64)]


def remap_scores(scores: np.ndarray, source: str, target: str) -> np.ndarray:
    """Sum probability (or vote) columns of ``source`` into the columns of ``target``."""
    table = remap_table(source, target)
    scores = np.asarray(scores)
    out = np.zeros(scores.shape[:-1] + (len(label_set(target)),), dtype=scores.dtype)
    for i, j in enumerate(table):
        out[..., j] += scores[..., i]
    return out

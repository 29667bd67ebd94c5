"""Deterministic stratified splits for data that comes without one."""

from __future__ import annotations

import numpy as np

SEED = 1234


def stratified_split(labels: np.ndarray, val: float = 0.1, test: float = 0.1,
                     seed: int = SEED) -> np.ndarray:
    """'train'/'val'/'test' per row, stratified by label, reproducible for a given seed."""
    labels = np.asarray(labels)
    out = np.full(len(labels), "train", dtype="U5")
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = int(round(len(idx) * val)), int(round(len(idx) * test))
        out[idx[:n_val]] = "val"
        out[idx[n_val:n_val + n_test]] = "test"
    return out

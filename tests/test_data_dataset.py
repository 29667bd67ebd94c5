"""Dataset helpers: selection, stratified training subsets, label remapping, counts."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core.errors import FerError
from tests.factories import pattern_faces


def test_indices_filter_by_split_and_class_and_shuffle_reproducibly():
    ds = pattern_faces(n_per_class=10)
    idx = ds.indices("val", 3)
    assert len(idx) == 10 and (ds.split[idx] == "val").all() and (ds.labels[idx] == 3).all()
    a, b = ds.indices("all", None, seed=5), ds.indices("all", None, seed=5)
    assert (a == b).all() and sorted(a) == list(range(len(ds))) and (a != np.arange(len(ds))).any()
    with pytest.raises(FerError, match="split"):
        ds.indices("holdout")


def test_limit_train_is_stratified_and_keeps_other_splits():
    ds = pattern_faces(n_per_class=40)
    small = ds.limit_train(70, seed=1)
    counts = small.counts()
    assert counts["train"]["total"] == 70
    assert set(counts["train"]["per_class"].values()) == {10}        # 7 classes x 10
    assert counts["val"] == ds.counts()["val"]
    assert ds.limit_train(0) is ds and ds.limit_train(10_000) is ds
    again = ds.limit_train(70, seed=1)
    assert (again.images == small.images).all()


def test_remap_folds_disgust_into_angry():
    ds = pattern_faces(n_per_class=5)
    merged = ds.remap("merged6")
    assert merged.n_classes == 6 and merged.label_names[0] == "angry"
    assert merged.counts()["train"]["per_class"]["angry"] == 10      # angry + disgust

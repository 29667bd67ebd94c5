"""FER+ vote files joined by row order with a FER2013 CSV."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core import data
from fer_core.data import fer2013
from fer_core.errors import FerError
from fer_core.labels import FERPLUS8

HEAD = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
VOTES = [
    [10, 0, 0, 0, 0, 0, 0, 0, 0, 0],   # neutral
    [0, 6, 4, 0, 0, 0, 0, 0, 0, 0],    # happiness
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],   # NF -> dropped
    [1, 0, 0, 0, 0, 0, 0, 7, 2, 0],    # contempt
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],    # no votes -> dropped
    [0, 0, 2, 0, 0, 0, 6, 0, 2, 0],    # fear
]


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (6, 48, 48), dtype=np.uint8)
    sp = np.array(["train", "train", "train", "val", "test", "train"])
    fer = tmp_path / "fer2013.csv"
    fer.write_bytes(fer2013.to_csv_bytes(im, np.zeros(6, int), sp))
    plus = tmp_path / "fer2013new.csv"
    plus.write_text(HEAD + "\n" + "\n".join(
        f"Training,fer{i:07d}.png," + ",".join(map(str, v)) for i, v in enumerate(VOTES)) + "\n")
    return fer, plus, im, sp


def test_majority(files):
    fer, plus, im, sp = files
    ds = data.load(plus, cache=False, fer2013=fer)
    assert ds.label_names == FERPLUS8 and ds.label_set == "ferplus8"
    assert [ds.label_names[i] for i in ds.labels] == ["neutral", "happiness", "contempt", "fear"]
    assert np.array_equal(ds.images, im[[0, 1, 3, 5]])
    assert ds.split.tolist() == sp[[0, 1, 3, 5]].tolist()
    assert len(ds.skipped) == 2 and "line 4" in ds.skipped[0][0] and "'nf'" in ds.skipped[0][1]
    assert ds.skipped[1][1] == "no votes" and ds.soft_labels is None


def test_votes_mode(files):
    fer, plus, _, _ = files
    ds = data.load(plus, cache=False, fer2013=str(fer), mode="votes")
    assert ds.soft_labels.dtype == np.float32 and ds.soft_labels.shape == (4, 8)
    assert np.allclose(ds.soft_labels.sum(axis=1), 1)
    assert np.allclose(ds.soft_labels[1][:4], [0, 0.6, 0.4, 0])
    assert np.array_equal(ds.labels, ds.soft_labels.argmax(axis=1))
    merged = ds.remap("fer7")
    assert merged.soft_labels.shape == (4, 7)


def test_errors(files, tmp_path):
    fer, plus, _, _ = files
    with pytest.raises(FerError, match="fer2013=PATH"):
        data.load(plus, cache=False)
    short = tmp_path / "short.csv"
    short.write_text(fer.read_text().splitlines()[0] + "\n" +
                     "\n".join(fer.read_text().splitlines()[1:4]) + "\n")
    with pytest.raises(FerError, match="6 rows but the FER2013 CSV .* has 3"):
        data.load(plus, cache=False, fer2013=short)
    with pytest.raises(FerError, match="unknown FER\\+ mode"):
        data.load(plus, cache=False, fer2013=fer, mode="soft")
    bad = tmp_path / "bad.csv"
    bad.write_text(HEAD + "\nTraining,a.png,1,x,0,0,0,0,0,0,0,0\n")
    with pytest.raises(FerError, match="line 2"):
        data.load(bad, cache=False, fer2013=fer)

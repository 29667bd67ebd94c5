"""The in-memory dataset every part of FER Studio works on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fer_core import labels as labelsets
from fer_core.errors import FerError

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    """Faces with labels.

    images: uint8 (N, 48, 48) grey faces; labels: int64 (N,) indices into ``label_names``;
    split: (N,) strings "train"/"val"/"test"; soft_labels: optional float32 (N, C) vote
    distribution (FER+); skipped: rows left out under ``strict=False`` as (where, reason).
    """

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    label_names: tuple[str, ...]
    source: str = ""
    label_set: str = "fer7"
    synthetic: bool = False
    soft_labels: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.shape[1:] != (48, 48):
            raise FerError(f"images must be uint8 (N, 48, 48), got {self.images.dtype} "
                           f"{self.images.shape}", where=self.source or "dataset")
        if len(self.labels) != n or len(self.split) != n:
            raise FerError("images, labels and split differ in length", where=self.source)
        self.label_names = tuple(self.label_names)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def splits(self) -> list[str]:
        """Splits present, in train/val/test order."""
        present = set(np.unique(self.split).tolist())
        return [s for s in SPLITS if s in present]

    def mask(self, split: str | None) -> np.ndarray:
        if split in (None, "all"):
            return np.ones(len(self), dtype=bool)
        if split not in SPLITS:
            raise FerError(f"unknown split {split!r}; expected one of {SPLITS + ('all',)}",
                           where="split")
        return self.split == split

    def subset(self, split: str | None = None, index=None) -> "Dataset":
        """Rows of one split (or 'all'), optionally further selected by ``index``."""
        sel = np.flatnonzero(self.mask(split))
        if index is not None:
            sel = sel[np.asarray(index)]
        return replace(self, images=self.images[sel], labels=self.labels[sel],
                       split=self.split[sel],
                       soft_labels=None if self.soft_labels is None else self.soft_labels[sel])

    def indices(self, split: str | None = None, label: int | None = None,
                seed: int | None = None) -> np.ndarray:
        """Row indices of one split (or all) and one class (or all); shuffled with ``seed``."""
        keep = self.mask(split)
        if label is not None:
            keep &= self.labels == label
        idx = np.flatnonzero(keep)
        return idx if seed is None else np.random.default_rng(seed).permutation(idx)

    def limit_train(self, n: int, seed: int = 0) -> "Dataset":
        """At most ``n`` training faces, drawn per class in proportion (fixed ``seed``); the
        val/test rows are kept. ``n`` = 0 keeps everything."""
        train = np.flatnonzero(self.split == "train")
        if not n or n >= len(train):
            return self
        from fer_core.data.splits import stratified_split
        share = 1 - n / len(train)
        part = stratified_split(self.labels[train], val=share, test=0.0, seed=seed)
        keep = np.concatenate([train[part == "train"], np.flatnonzero(self.split != "train")])
        return self.subset("all", index=np.sort(keep))

    def remap(self, target: str) -> "Dataset":
        """The same faces with labels mapped to another label set (e.g. fer7 -> merged6)."""
        if target == self.label_set:
            return self
        soft = (None if self.soft_labels is None
                else labelsets.remap_scores(self.soft_labels, self.label_set, target))
        return replace(self, labels=labelsets.remap_labels(self.labels, self.label_set, target),
                       label_names=labelsets.label_set(target), label_set=target,
                       soft_labels=soft)

    def counts(self) -> dict[str, dict]:
        """{split: {"total": n, "per_class": {name: n}}} for the splits present."""
        out = {}
        for s in self.splits:
            lab = self.labels[self.split == s]
            per = np.bincount(lab, minlength=self.n_classes)
            out[s] = {"total": int(len(lab)),
                      "per_class": {n: int(c) for n, c in zip(self.label_names, per)}}
        return out

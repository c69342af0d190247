"""Duplicate-aware splitting on the real brain MRI set (22 groups of byte-identical files)."""

from __future__ import annotations

import hashlib

import numpy as np

from edgemed.data import load_dataset
from edgemed.data.split import duplicate_groups, grouped_split


def _file_hashes(brain_dir):
    files = sorted(p for p in brain_dir.rglob("*") if p.is_file())
    return files, [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]


def test_reports_the_known_exact_duplicates(brain_dir):
    ds = load_dataset(brain_dir, image_size=(32, 32))
    assert ds.duplicates.exact_groups == 22
    assert ds.duplicates.exact_redundant == 25


def test_no_byte_identical_image_crosses_splits(brain_dir):
    for seed in range(3):
        ds = load_dataset(brain_dir, image_size=(32, 32), seed=seed)
        seen = {name: set(s.hashes) for name, s in ds.splits.items()}
        assert not seen["train"] & seen["test"]
        assert not seen["train"] & seen["val"]
        assert not seen["val"] & seen["test"]
        assert sum(len(s) for s in ds.splits.values()) == 253


def test_a_random_split_would_leak_duplicates(brain_dir):
    _, hashes = _file_hashes(brain_dir)
    leaks = []
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(hashes))
        test, train = perm[:64], perm[64:]
        train_h = {hashes[i] for i in train}
        leaks.append(sum(hashes[i] in train_h for i in test))
    assert max(leaks) > 0  # what the grouped split prevents


def test_near_duplicates_grouped_and_stratified(brain_dir):
    ds = load_dataset(brain_dir, image_size=(32, 32), near_duplicates=True)
    assert ds.duplicates.near_redundant > 0
    for s in ds.splits.values():
        frac = s.labels.mean()
        assert 0.4 < frac < 0.8  # 155/253 = 0.61 tumour in every split


def test_grouped_split_keeps_groups_whole():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 1])
    groups, exact, _ = duplicate_groups(["a", "a", "b", "c", "c", "d", "e", "f", "g", "h"])
    assert exact == 2
    idx = grouped_split(labels, groups, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    where = {int(i): name for name, ids in idx.items() for i in ids}
    assert where[0] == where[1] and where[3] == where[4]
    assert sorted(where) == list(range(10))

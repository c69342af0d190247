"""Duplicate-aware, class-stratified splits: identical (or near-identical) images stay together."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DuplicateReport:
    """What the split found: groups of identical images and how many files were redundant copies."""

    exact_groups: int
    exact_redundant: int
    near_groups: int
    near_redundant: int
    conflicting_labels: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def dhash(image: np.ndarray, size: int = 8) -> int:
    """Difference hash of a uint8 image (H, W, C): 64 bits, robust to re-encoding and resizing."""
    from PIL import Image

    gray = image.mean(axis=2).astype(np.uint8) if image.ndim == 3 else image
    small = np.asarray(Image.fromarray(gray).resize((size + 1, size), Image.BILINEAR), np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def duplicate_groups(
    hashes: list[str], images: np.ndarray | None = None, near_bits: int = -1
) -> tuple[np.ndarray, int, int]:
    """Group ids per sample: byte-identical files share a group; with near_bits >= 0, so do images
    whose dHash differs in at most `near_bits` bits. Returns (groups, exact_redundant, near_redundant).
    """
    n = len(hashes)
    uf = _UnionFind(n)
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        uf.union(first.setdefault(h, i), i)
    exact_redundant = n - len(first)
    if near_bits >= 0 and images is not None:
        codes = np.array([dhash(im) for im in images], dtype=np.uint64)
        for i in range(n):
            x = np.bitwise_xor(codes[i + 1 :], codes[i])
            dist = np.array([bin(int(v)).count("1") for v in x])
            for j in np.nonzero(dist <= near_bits)[0]:
                uf.union(i, i + 1 + int(j))
    roots = np.array([uf.find(i) for i in range(n)])
    near_redundant = n - len(set(roots.tolist())) - exact_redundant
    return roots, exact_redundant, near_redundant


def grouped_split(
    labels: np.ndarray, groups: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Assign whole groups to splits, stratified by each group's majority label, seeded.

    `fractions` maps split name -> fraction (summing to 1); returns split name -> sorted indices.
    """
    rng = np.random.default_rng(seed)
    flat = labels if labels.ndim == 1 else labels.argmax(axis=1)
    uniq = np.unique(groups)
    group_label = {g: np.bincount(flat[groups == g].astype(int)).argmax() for g in uniq}
    out: dict[str, list[int]] = {name: [] for name in fractions}
    names = list(fractions)
    for cls in sorted(set(group_label.values())):
        cls_groups = [g for g in uniq if group_label[g] == cls]
        rng.shuffle(cls_groups)
        total = sum(int((groups == g).sum()) for g in cls_groups)
        filled = dict.fromkeys(names, 0)
        for g in cls_groups:
            members = np.nonzero(groups == g)[0]
            # Put the group where the split is furthest below its target share of this class.
            name = min(names, key=lambda s: filled[s] / total - fractions[s])
            out[name].extend(members.tolist())
            filled[name] += len(members)
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in out.items()}


def conflicting_label_groups(labels: np.ndarray, groups: np.ndarray) -> int:
    """How many duplicate groups carry more than one label (the same image filed under two classes)."""
    flat = labels if labels.ndim == 1 else labels.argmax(axis=1)
    return sum(len(np.unique(flat[groups == g])) > 1 for g in np.unique(groups))

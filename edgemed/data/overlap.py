"""Images a dataset's own splits share by content (public splits often do): the test or validation
metrics of a model trained on such a split are optimistic. `train` and `bench` warn with the count
and record it (card `data.split_overlap`, bench results `data.split_overlap`)."""

from __future__ import annotations

from edgemed.data import SPLITS, Dataset

PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))


def split_overlap(ds: Dataset) -> dict:
    """`pairs`: per pair of splits, how many images of the later split have the content (SHA-256)
    of an image in the earlier one; `by_split`: per split, its images whose content is also in
    another split; `images`: the distinct val/test images that share content with an earlier split."""
    hashes = {s: ds.splits[s].hashes if s in ds.splits else () for s in SPLITS}
    pairs = {}
    for a, b in PAIRS:
        seen = set(hashes[a])
        pairs[f"{a}/{b}"] = sum(h in seen for h in hashes[b])
    by_split = {}
    for s in SPLITS:
        others = {h for o in SPLITS if o != s for h in hashes[o]}
        by_split[s] = sum(h in others for h in hashes[s])
    leaking = {h for a, b in PAIRS for h in set(hashes[a]) & set(hashes[b])}
    images = sum(h in leaking for s in ("val", "test") for h in hashes[s])
    return {"pairs": pairs, "by_split": by_split, "images": images}


def overlap_warning(overlap: dict, path: str, split: str | None = None) -> str | None:
    """One warning line (about every split, or only the evaluated `split`), or None."""
    n = overlap["by_split"][split] if split else overlap["images"]
    if not n:
        return None
    pairs = ", ".join(f"{k} {v}" for k, v in overlap["pairs"].items())
    what = (
        f"{n} images of its {split} split are also in another split"
        if split
        else f"{n} val/test images are also in an earlier split"
    )
    return (
        f"the splits of {path} share images by content: {what} ({pairs}); "
        "metrics on those splits are optimistic: remove the copies from the split files, or pass "
        "the images as a class-folder tree (edgemed keeps duplicates within one split)"
    )

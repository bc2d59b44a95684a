"""The ids of the data checks (light: the config schema validates ``data.checks.ignore`` against them)."""

from __future__ import annotations

CHECKS: dict[str, str] = {
    "unreadable": "files that cannot be read or decoded",
    "duplicate_paths": "one file listed more than once",
    "conflicting_labels": "one image (same file, or identical pixels) with different labels or values",
    "exact_duplicates.leak": "identical pixels in different splits or groups",
    "exact_duplicates.within_split": "identical pixels within one split",
    "near_duplicates.leak": "near-identical images (perceptual hash, confirmed by colour) in different splits or "
                            "groups",
    "near_duplicates.within_split": "near-identical images (perceptual hash, confirmed by colour) within one split",
    "near_duplicates.unconfirmed": "close perceptual hashes that the colour thumbnails did not confirm (a note)",
    "feature_duplicates": "near-identical frozen-network features (crops, small rotations) in different splits",
    "labels.case_variants": "labels that differ only by case, surrounding space or Unicode form",
    "labels.missing_from_split": "classes with no image in some split",
    "labels.imbalance": "classes far rarer than the others",
    "quality.dark": "very dark images",
    "quality.bright": "very bright (washed-out) images",
    "quality.blurry": "blurry images",
    "quality.low_information": "nearly uniform images (one colour: an empty frame, a covered lens)",
    "quality.size_outlier": "images far larger or smaller than the rest",
    "quality.aspect_outlier": "images far wider or taller than the rest",
    "label_errors": "likely label errors (out-of-sample probabilities on frozen pretrained features, cleanlab)",
    "background_shortcut": "the image border alone predicts the label",
    "bands.statistics": "data.bands: per-band mean, spread, percentiles, zero and saturated pixels per split (a note)",
    "bands.constant": "data.bands: images in which a band holds one value (a dead sensor, a blank export)",
    "bands.shift": "data.bands: a band distributed differently in the training and test splits",
}

FAMILIES = tuple(sorted({name.split(".")[0] for name in CHECKS}))


def selected(check: str, ignore: tuple[str, ...]) -> bool:
    """Whether ``check`` runs: not named in ``ignore``, by itself or by its family (``quality``)."""
    return check not in ignore and check.split(".")[0] not in ignore


def unknown(names: tuple[str, ...]) -> list[str]:
    """The names in ``names`` that are neither a check id nor a family of them."""
    return [n for n in names if n not in CHECKS and n not in FAMILIES]

"""A class map: how the labels of another image source name a run's classes.

Another source (another farm, camera or dataset) rarely spells its labels as the run's training data did, and
may hold classes the run never learned. A class map is a YAML mapping, many-to-one, from the other source's
labels to the run's classes::

    Tomato___Early_blight: blight
    early blight: blight        # several labels may name one class
    Tomato___healthy: healthy
    mosaic_virus: unknown       # a class the run does not have: expected to be "unknown" (null means the same)

A label the map does not name is expected to be unknown too; without a map, a label that is one of the run's
classes maps to itself and every other label is unknown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plantpheno.data.sources import Sample
from plantpheno.errors import DataError

UNKNOWN = "unknown"
"""The value that marks a source label as one the run has no class for (``null`` in YAML means the same)."""


@dataclass(frozen=True)
class ClassMap:
    """Source label -> run class (``None``: expected unknown); ``origin`` names where it came from."""

    mapping: dict[str, str | None] = field(default_factory=dict)
    origin: str | None = None  # the YAML file, or None for the identity map

    def target(self, label: str, class_names: Sequence[str]) -> str | None:
        """The run class ``label`` stands for, or None when it is expected to be unknown."""
        if self.origin is None:
            return label if label in class_names else None
        return self.mapping.get(label)


@dataclass(frozen=True)
class MappedSource:
    """The images of another source, split into those with a run class and those expected to be unknown."""

    mapped: list[tuple[Sample, int]]  # (image, index of its run class)
    unmapped: list[Sample]
    labels: dict[str, int]  # images per source label
    unused_keys: tuple[str, ...]  # map entries no image carries (a typo in the map, often)


def load_class_map(path: Path, class_names: Sequence[str]) -> ClassMap:
    """Read and check a class map against the run's ``class_names``; every problem at once, as a DataError."""
    import yaml

    if not path.is_file():
        what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
        raise DataError(f"class map {path} {what}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"class map {path} is not readable YAML ({str(exc).splitlines()[0]})") from None
    return parse_class_map(raw, class_names, origin=str(path))


def parse_class_map(raw: object, class_names: Sequence[str], *, origin: str = "class map") -> ClassMap:
    """A :class:`ClassMap` from a mapping ``{source label: run class | unknown | null}`` (YAML's shape)."""
    shape = f"expected a mapping 'source label: run class' (one class per label, or {UNKNOWN}/null)"
    if not isinstance(raw, dict) or not raw:
        what = "is empty" if raw is None or raw == {} else f"is a {type(raw).__name__}"
        raise DataError(f"{origin} {what}; {shape}")
    problems, mapping = [], {}
    for key, value in raw.items():
        if isinstance(key, bool) or not isinstance(key, (str, int, float)):
            problems.append(f"label {key!r} is not a plain label (a {type(key).__name__})")
            continue
        label = str(key)
        if value is None or value == UNKNOWN:
            mapping[label] = None
        elif not isinstance(value, str):
            problems.append(f"{label!r} maps to {value!r} (a {type(value).__name__}); {shape}")
        elif value not in class_names:
            problems.append(f"{label!r} maps to {value!r}, which is not a class of the run")
        else:
            mapping[label] = value
    if problems:
        raise DataError(f"{origin}: " + "; ".join(problems) + f" (the run's classes: {', '.join(class_names)})")
    return ClassMap(mapping, origin)


def map_source(samples: Sequence[Sample], class_map: ClassMap, class_names: Sequence[str], *,
               source: str) -> MappedSource:
    """Apply ``class_map`` to the images of ``source``; a DataError when no image maps to a run class."""
    index = {name: i for i, name in enumerate(class_names)}
    mapped, unmapped = [], []
    for sample in samples:
        target = class_map.target(str(sample.target), class_names)
        if target is None:
            unmapped.append(sample)
        else:
            mapped.append((sample, index[target]))
    labels = Counter(str(s.target) for s in samples)
    if not mapped:
        found = ", ".join(f"{k} ({n})" for k, n in sorted(labels.items())[:12])
        how = (f"the class map {class_map.origin} maps none of them to a run class" if class_map.origin
               else "none is one of the run's classes; give a class map (--class-map MAP.yaml)")
        raise DataError(f"{source} has no image with a label of the run: its labels are {found}"
                        f"{' ...' if len(labels) > 12 else ''}; {how} (the run's classes: {', '.join(class_names)})")
    unused = tuple(sorted(k for k in class_map.mapping if k not in labels))
    return MappedSource(mapped, unmapped, dict(sorted(labels.items())), unused)

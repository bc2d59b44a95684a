"""Data the user gave is never ignored without a word: the manifest's column names come from the config
(data.path_column ... data.group_column), and columns nothing reads are listed once."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import tiny_config
from plantpheno.config import validate_config
from plantpheno.data.prepared import prepare_data
from plantpheno.data.synth import synthesize_disease
from plantpheno.errors import ConfigError, DataError
from plantpheno.reporting import LoggingReporter


class Lines:
    """A reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def progress(self, **kwargs):
        return LoggingReporter().progress(**kwargs)


@pytest.fixture(scope="module")
def plants_csv(tmp_path_factory) -> Path:
    """A manifest with its own column names: file, disease, plant_id (4 photos per plant) and date."""
    root = synthesize_disease(tmp_path_factory.mktemp("cols") / "leaves", per_class=12, image_size=32, seed=5)
    manifest = root.parent / "plants.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "disease", "plant_id", "date"])
        for i, path in enumerate(sorted(root.rglob("*.jpg"))):
            writer.writerow([path.relative_to(root.parent).as_posix(), path.parent.name, f"p{i // 4}", f"d{i % 3}"])
    return manifest


def _prepare(tmp_path: Path, reporter: Lines | None = None, **data):
    return prepare_data(validate_config(tiny_config(tmp_path, data=data)), reporter=reporter)


def test_group_column_groups_the_split_and_the_other_columns_are_named(tmp_path, plants_csv):
    heard = Lines()
    prepared = _prepare(tmp_path, heard, manifest=str(plants_csv), path_column="file", label_column="disease",
                        group_column="plant_id", val_fraction=0.25, test_fraction=0.25)
    split_of: dict[str, set[str]] = {}
    for split, samples in prepared.splits.items():
        for s in samples:
            split_of.setdefault(s.group, set()).add(split)
    assert len(split_of) == 12 and all(len(splits) == 1 for splits in split_of.values())  # a plant in one split
    assert heard.infos == [f"{plants_csv}: ignored columns: date; groups come from plant_id (data.group_column)"]


def test_extra_columns_are_listed_once_with_how_to_group_by_one(tmp_path, plants_csv):
    heard = Lines()
    prepared = _prepare(tmp_path, heard, manifest=str(plants_csv), path_column="file", label_column="disease")
    assert {s.group for samples in prepared.splits.values() for s in samples} == {None}
    assert heard.infos == [f"{plants_csv}: ignored columns: plant_id, date; set data.group_column to group by one "
                           f"(its images then stay in one split)"]


def test_a_named_column_that_is_not_there_is_an_error_naming_the_field(tmp_path, plants_csv):
    with pytest.raises(DataError, match=r"missing column\(s\) plant \(data.group_column\); found \['file', "):
        _prepare(tmp_path, manifest=str(plants_csv), path_column="file", label_column="disease",
                 group_column="plant")
    with pytest.raises(DataError, match=r"missing column\(s\) path, label; .*set data.path_column, "
                                        r"data.label_column"):
        _prepare(tmp_path, manifest=str(plants_csv))


def test_column_names_without_a_manifest_are_refused(tmp_path, plants_csv):
    with pytest.raises(ConfigError, match=r"data.group_column=plant_id name\(s\) a manifest column, but there is "
                                          r"no data.manifest"):
        validate_config(tiny_config(tmp_path, data={"root": str(plants_csv.parent), "group_column": "plant_id"}))

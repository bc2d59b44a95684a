"""The data checks (plantpheno.data.doctor): each planted defect is found, and a clean data set raises no error."""

from __future__ import annotations

import csv
import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from conftest import tiny_config
from plantpheno.config import validate_config
from plantpheno.data.prepared import prepare_data
from plantpheno.data.doctor.check import check_data
from plantpheno.data.doctor.findings import DataCheckReport
from plantpheno.data.synth import Defects, synthesize_disease, synthesize_rosettes
from plantpheno.errors import ConfigError


def _check(tmp_path: Path, checks: dict | None = None, task: str = "classification", **data) -> DataCheckReport:
    config = validate_config(tiny_config(tmp_path, task=task, data={**data, "checks": checks or {}}))
    return check_data(prepare_data(config), config.data, seed=config.seed)


def _by_check(report: DataCheckReport) -> dict[str, list]:
    found: dict[str, list] = {}
    for f in report.findings:
        found.setdefault(f.check, []).append(f)
    return found


def _pairs(finding) -> set[frozenset[str]]:
    return {frozenset(Path(p).relative_to(Path(p).parents[1]).as_posix() for p in group) for group in finding.files}


def _write_manifest(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"][:len(rows[0])])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """16 leaves per class with 3 cross-split copies, 2 re-saved copies, 2 conflicting copies and 3 flips."""
    return synthesize_disease(tmp_path_factory.mktemp("planted") / "leaves", per_class=16, image_size=48, seed=3,
                              defects=Defects(duplicates=3, near_duplicates=2, conflicts=2, flips=3))


def test_every_planted_duplicate_and_conflict_is_found_and_nothing_else(tmp_path, planted):
    defects = json.loads((planted / "defects.json").read_text())
    report = _check(tmp_path, manifest=str(planted / "labels.csv"))
    found = _by_check(report)
    assert _pairs(found["exact_duplicates.leak"][0]) == {frozenset(p) for p in defects["duplicates"]}
    assert _pairs(found["near_duplicates.leak"][0]) == {frozenset(p) for p in defects["near_duplicates"]}
    assert _pairs(found["conflicting_labels"][0]) == {frozenset(p) for p in defects["conflicts"]}
    assert {f.severity for f in report.findings if f.check in found} >= {"error"}
    assert len(report.errors) == 3  # no other error: flips are invisible without a model
    notes = found["exact_duplicates.leak"][0].file_notes[0]
    assert {n.split(",")[0] for n in notes} == {"train", "test"}


def test_a_clean_synthetic_set_gives_no_error_and_no_warning(tmp_path, disease_root, rosette_manifest):
    for report in (_check(tmp_path, root=str(disease_root)),
                   _check(tmp_path, task="regression", manifest=str(rosette_manifest))):
        assert not report.errors, [f.line() for f in report.errors]
        assert not report.warnings, [f.line() for f in report.warnings]
        assert "background_shortcut" in report.ran


def test_a_file_listed_twice_with_two_labels(tmp_path, disease_root):
    a, b = sorted((disease_root / "rust").iterdir())[:2]
    rows = [(str(p), p.parent.name, "train") for p in sorted(disease_root.rglob("*.jpg"))]
    rows += [(str(a), "healthy", "test"), (str(b), "rust", "val")]  # a: other label; b: listed twice, same label
    report = _check(tmp_path, manifest=str(_write_manifest(tmp_path / "m.csv", rows)))
    found = _by_check(report)
    listed_twice = found["duplicate_paths"][0]
    assert listed_twice.severity == "error" and listed_twice.count == 2
    assert {g[0] for g in listed_twice.files} == {str(a), str(b)}
    conflict = found["conflicting_labels"][0]
    assert conflict.count == 1 and set(conflict.files[0]) == {str(a)}
    assert {n.split(", ")[1] for n in conflict.file_notes[0]} == {"rust", "healthy"}


def test_groups_crossed_by_a_duplicate_and_duplicates_within_a_split(tmp_path, disease_root):
    files = sorted(disease_root.rglob("*.jpg"))
    copies = tmp_path / "copies"
    copies.mkdir()
    rows = [(str(p), p.parent.name, f"plant{i}") for i, p in enumerate(files)]
    for k, source in enumerate(files[:2]):
        shutil.copyfile(source, copies / f"copy{k}.jpg")
    rows += [(str(copies / "copy0.jpg"), files[0].parent.name, "plant0"),  # same group, so same split
             (str(copies / "copy1.jpg"), files[1].parent.name, "other")]  # another group: a leak, whatever the split
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "group"), *rows])
    config = validate_config(tiny_config(tmp_path, data={"manifest": str(manifest), "val_fraction": 0.2,
                                                         "test_fraction": 0.2}))
    prepared = prepare_data(config)
    found = _by_check(check_data(prepared, config.data, seed=config.seed))
    leaks = found["exact_duplicates.leak"][0]
    assert {frozenset(g) for g in leaks.files} == {frozenset({str(files[1]), str(copies / "copy1.jpg")})}
    # the group kept copy0 in its original's split (whatever that is): a warning, not an error
    inside = found["exact_duplicates.within_split"][0]
    assert inside.severity == "warning" and set(inside.files[0]) == {str(files[0]), str(copies / "copy0.jpg")}


def test_labels_that_differ_by_case_space_or_unicode_form(tmp_path):
    source = synthesize_disease(tmp_path / "src", per_class=8, image_size=40, seed=5)
    root = tmp_path / "root"
    nfd = unicodedata.normalize("NFD", "brûlure")
    for folder, cls in (("Rust", "rust"), ("rust", "rust"), ("RUST ", "rust"), ("brûlure", "blight"), (nfd, "blight"),
                        ("healthy", "healthy")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for p in sorted((source / cls).iterdir())[:4 if folder != "rust" else 8]:
            shutil.copyfile(p, root / folder / f"{len(folder)}{p.name}")
    report = _check(tmp_path, root=str(root), checks={"ignore": ["exact_duplicates", "near_duplicates",
                                                                 "conflicting_labels"]})
    finding = _by_check(report)["labels.case_variants"][0]
    assert finding.severity == "error" and finding.count == 2
    assert "'RUST ' (4) + 'Rust' (4) -> 'rust' (8)" in finding.message
    assert f"{nfd!r} (accents stored decomposed, Unicode NFD) (4) -> 'brûlure' (4)" in finding.message
    assert all("-> 'rust'" in note or "brûlure" in note for group in finding.file_notes for note in group)


def test_small_and_rare_classes(tmp_path):
    source = synthesize_disease(tmp_path / "src", per_class=30, image_size=40, seed=6)
    rows = []
    for cls, n in (("healthy", 30), ("rust", 30), ("blight", 30), ("leaf_spot", 2)):
        rows += [(str(p), cls) for p in sorted((source / cls).iterdir())[:n]]
    report = _check(tmp_path, manifest=str(_write_manifest(tmp_path / "m.csv", rows)))
    found = _by_check(report)
    missing = found["labels.missing_from_split"][0]
    assert missing.severity == "warning" and "'leaf_spot'" in missing.message and missing.count == 1
    imbalance = found["labels.imbalance"][0]
    assert "'leaf_spot' 2" in imbalance.message and "class_weights=balanced" in imbalance.fix
    assert not report.errors


def test_quality_outliers_are_flagged_one_by_one(tmp_path):
    root = synthesize_disease(tmp_path / "leaves", per_class=10, image_size=64, seed=7)
    base = Image.open(root / "rust" / "rust_0000.jpg").convert("RGB")
    planted = {
        "quality.dark": ImageEnhance.Brightness(base).enhance(0.12),
        "quality.bright": Image.blend(base, Image.new("RGB", base.size, (255, 255, 255)), 0.88),
        "quality.blurry": base.filter(ImageFilter.GaussianBlur(5)),
        "quality.low_information": Image.new("RGB", base.size, (90, 110, 70)),
        "quality.size_outlier": base.resize((256, 256)),
        "quality.aspect_outlier": base.resize((160, 48)),
    }
    for check, img in planted.items():
        img.save(root / "rust" / f"{check.split('.')[1]}.png")
    report = _check(tmp_path, root=str(root), checks={"ignore": ["near_duplicates", "exact_duplicates"]})
    flagged = {f.check: {Path(g[0]).stem for g in f.files} for f in report.findings if f.check.startswith("quality")
               and f.severity == "warning"}
    assert flagged == {check: {check.split(".")[1]} for check in planted}


def test_a_data_set_that_is_soft_everywhere_is_not_flagged_image_by_image(tmp_path):
    root = synthesize_disease(tmp_path / "leaves", per_class=8, image_size=64, seed=8)
    for path in root.rglob("*.jpg"):
        Image.open(path).filter(ImageFilter.GaussianBlur(5)).save(path, quality=95)
    found = _by_check(_check(tmp_path, root=str(root)))
    assert [f.severity for f in found["quality.blurry"]] == ["info"]
    assert found["quality.blurry"][0].count > 0.25 * 32  # most, not one by one


def test_background_shortcut_fires_on_class_backgrounds_and_not_on_clean_ones(tmp_path):
    shortcut = synthesize_disease(tmp_path / "shortcut", per_class=25, image_size=48, seed=9,
                                  defects=Defects(background_shortcut=True))
    clean = synthesize_disease(tmp_path / "clean", per_class=25, image_size=48, seed=9)
    fired = _by_check(_check(tmp_path, manifest=str(shortcut / "labels.csv")))["background_shortcut"][0]
    assert fired.severity == "warning"
    assert fired.details["accuracy"] > 0.8 and fired.details["p_value"] <= 0.01
    assert fired.details["chance"] == 0.25 and "95 % CI" in fired.message
    quiet = _by_check(_check(tmp_path, root=str(clean)))["background_shortcut"][0]
    assert quiet.severity == "info" and quiet.details["p_value"] > 0.01


def test_background_shortcut_on_a_trait_is_r2_against_the_mean(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        value = float(rng.uniform(0, 10))
        img = np.full((48, 48, 3), int(40 + 18 * value), np.uint8)  # the frame's brightness tracks the trait
        img[8:40, 8:40] = rng.integers(0, 256, (32, 32, 3))
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        rows.append((f"{i}.png", value))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,value\n" + "".join(f"{p},{v}\n" for p, v in rows))
    finding = _by_check(_check(tmp_path, task="regression", manifest=str(manifest)))["background_shortcut"][0]
    assert finding.severity == "warning" and finding.details["r2"] > 0.9 and "R²" in finding.message


def test_ignore_by_id_or_family_and_unknown_ids(tmp_path, planted):
    report = _check(tmp_path, manifest=str(planted / "labels.csv"),
                    checks={"ignore": ["exact_duplicates.leak", "quality", "background_shortcut"]})
    checks = {f.check for f in report.findings}
    assert "exact_duplicates.leak" not in checks and "near_duplicates.leak" in checks
    assert report.skipped["quality.blurry"] == "in data.checks.ignore"
    with pytest.raises(ConfigError, match="unknown: duplicates, qualty"):
        validate_config(tiny_config(tmp_path, data={"root": str(tmp_path), "checks": {"ignore": ["duplicates",
                                                                                               "qualty"]}}))


def test_report_json_keeps_the_contract(tmp_path, planted):
    report = _check(tmp_path, manifest=str(planted / "labels.csv"))
    path = tmp_path / "data_check.json"
    report.write(path)
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["summary"]["errors"] == 3 and data["summary"]["warnings"] == len(report.warnings)
    for finding in data["findings"]:
        assert {"severity", "check", "message", "count", "fix", "files"} <= set(finding)
        assert all(isinstance(group, list) and all(isinstance(p, str) for p in group) for group in finding["files"])
    assert DataCheckReport.read(path).to_json() == data
    assert data["findings"][0]["severity"] == "error"  # errors first


def test_unreadable_files_are_one_finding(tmp_path, disease_root):
    root = tmp_path / "leaves"
    shutil.copytree(disease_root, root)
    (root / "rust" / "broken.jpg").write_bytes(b"not a jpeg")
    config = validate_config(tiny_config(tmp_path, data={"root": str(root), "on_bad_image": "skip"}))
    finding = _by_check(check_data(prepare_data(config), config.data, seed=config.seed))["unreadable"][0]
    assert finding.severity == "info" and finding.files == ((str(root / "rust" / "broken.jpg"),),)


def test_rosette_views_of_one_plant_are_not_near_duplicates(tmp_path):
    manifest = synthesize_rosettes(tmp_path / "ros", plants=24, views_per_plant=4, image_size=64, seed=4)
    found = _by_check(_check(tmp_path, task="regression", manifest=str(manifest)))
    assert "near_duplicates.leak" not in found and "exact_duplicates.leak" not in found


def test_the_report_is_memoised_for_the_same_data_and_settings(tmp_path, disease_root, monkeypatch):
    from plantpheno.data.doctor import runner

    config = validate_config(tiny_config(tmp_path, data={"root": str(disease_root)}))
    prepared = prepare_data(config)
    def checked(config):
        return runner.run_data_checks(prepared, config.data, seed=config.seed, output_dir=config.output_dir,
                                      extract=None)

    first = checked(config)
    calls = []
    monkeypatch.setattr(runner, "check_data", lambda *a, **k: calls.append(1) or check_data(*a, **k))
    assert checked(config).to_json() == first.to_json()
    assert not calls, "the same data and settings were checked again"
    other = validate_config(tiny_config(tmp_path, data={"root": str(disease_root), "checks": {"folds": 3}}))
    checked(other)
    assert calls == [1], "other settings must be checked afresh"

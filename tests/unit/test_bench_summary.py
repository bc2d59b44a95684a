"""benchmarks/run_all.py turns the benchmarks' result files into one table against the issue's targets."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO


def _run_all(results_dir, monkeypatch):
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", results_dir)
    return module


def test_summary_reads_each_result_and_judges_its_target(tmp_path, monkeypatch):
    run_all = _run_all(tmp_path, monkeypatch)
    (tmp_path / "trainer_overhead.json").write_text(json.dumps(
        {"args": {"backbone": "resnet10t", "image_size": 64, "batch_size": 32, "steps": 40, "repeats": 3},
         "ratio": 1.031}))
    row = {"build_s": 0, "epoch1_img_s": 0}
    (tmp_path / "data_pipeline.json").write_text(json.dumps({"meta": {"settings": "s"}, "results": [
        {**row, "image_size": 128, "pipeline": "imagefolder", "later_img_s": 100.0,
         "peak_rss_mib_per_epoch": [1000, 1000, 1000]},
        {**row, "image_size": 128, "pipeline": "memory", "later_img_s": 600.0,
         "peak_rss_mib_per_epoch": [1000, 1010, 1020]},
        {**row, "image_size": 128, "pipeline": "disk-reused", "later_img_s": 600.0,
         "peak_rss_mib_per_epoch": [1000, 1300, 1600]},  # fast, but memory grows
        {**row, "image_size": 224, "pipeline": "imagefolder", "later_img_s": 100.0,
         "peak_rss_mib_per_epoch": [1000, 1000, 1000], "pss_mib_per_epoch": [900, 900, 900]},
        {**row, "image_size": 224, "pipeline": "memory", "later_img_s": 500.0,  # judged on PSS where measured
         "peak_rss_mib_per_epoch": [1000, 1300, 1600], "pss_mib_per_epoch": [900, 905, 910]},
    ]}))
    curve = [{"epoch": 1, "train_s": 300, "test_accuracy": 0.95}, {"epoch": 2, "train_s": 600, "test_accuracy": 0.98}]
    (tmp_path / "time_to_accuracy.json").write_text(json.dumps({"machine": {"cpu_model": "AMD EPYC",
                                                                            "cpus_affinity": 2}, "results": {
        "recipe seed 0": {"wall_s": 140, "test_accuracy": 0.975},
        "recipe seed 1": {"wall_s": 190, "test_accuracy": 0.98},
        "classic": {"epochs": curve, "test_eval_s": 10, "time_to_best_s": 610, "test_accuracy": 0.98},
        "fastai": {"epochs": curve, "test_eval_s": 10, "time_to_best_s": 610, "test_accuracy": 0.98}}}))
    rows = run_all.summarise()
    assert [(r["measured"], r["met"]) for r in rows] == [
        ("1.031x", False),
        ("6.00x; peak RSS 1000 / 1010 / 1020 MiB", True),
        ("6.00x; peak RSS 1000 / 1300 / 1600 MiB", False),
        ("5.00x; PSS at epoch end 900 / 905 / 910 MiB", True),
        ("97.5 % in 140 s; 0.23x classic's time to its best; fastai to 97.5 %: 610 s", True),
        ("98.0 % in 190 s; 0.31x classic's time to its best; fastai to 98.0 %: 610 s", False),  # over a quarter
    ]
    text = run_all.write_summary(rows, {})
    assert text.count("| NO |") == 3 and (tmp_path / "summary.json").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == rows


def test_summary_of_no_results_is_an_empty_table(tmp_path, monkeypatch):
    run_all = _run_all(tmp_path, monkeypatch)
    assert run_all.summarise() == []

"""``plantpheno data suggest`` end to end: a tiny trained run, a pool with a broken file, the files it writes, a
second round on cached features, and the refusals that need a run (budget, strategy, task)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from plantpheno.cli import main


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    from plantpheno.data.synth import synthesize_disease

    root = synthesize_disease(tmp_path_factory.mktemp("pool") / "new", per_class=4, image_size=48, seed=9)
    (root / "healthy" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_suggest_writes_ranked_csv_contact_sheet_and_reuses_the_cached_features(trained_run, disease_root, pool,
                                                                                 tmp_path, capsys):
    run = trained_run(data={"root": str(disease_root)}).run_dir
    out = tmp_path / "round1"
    assert main(["data", "suggest", str(run), "--pool", str(pool), "--budget", "5", "--recheck", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 pool image(s)" in printed and "broken.jpg: unreadable" in printed
    rows = _rows(out / "suggestions.csv")
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert set(rows[0]) == {"path", "rank", "score", "reason", "predicted_class", "nearest_labelled", "similarity"}
    # the default for 5 images of 4 classes (more than one a class), typical-badge: the tiny run has more labelled
    # images a class than the switch's mark, so BADGE
    assert all("BADGE: k-means++ on gradient embeddings" in r["reason"] for r in rows)
    assert all(Path(r["path"]).is_relative_to(pool) and Path(r["nearest_labelled"]).is_relative_to(disease_root)
               for r in rows)
    assert [Path(r["path"]).name for r in _rows(out / "skipped.csv")] == ["broken.jpg"]
    assert len(_rows(out / "recheck.csv")) <= 2
    page = (out / "suggestions.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 10 and "http" not in page.split("</head>")[1]
    memo = next((run.parent.parent / ".cache" / "suggest").glob("features-*.npz"))
    stamp = memo.stat().st_mtime_ns
    import plantpheno as pp

    second = pp.suggest(run, pool=pool, budget=3, strategy="kcenter", out=tmp_path / "round2", verbose=False)
    assert memo.stat().st_mtime_ns == stamp  # nothing new to compute: read from the cache
    assert len(second.suggestions) == 3 and "far from every labelled image" in second.suggestions[0].reason


def test_a_budget_larger_than_the_pool_and_a_strategy_of_the_other_task_are_one_line_each(
        trained_run, disease_root, pool, tmp_path, capsys):
    run = trained_run(data={"root": str(disease_root)}).run_dir
    assert main(["data", "suggest", str(run), "--pool", str(pool), "--budget", "500", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budget 500 is larger than the pool" in err[0] and "has 16 usable" in err[0]
    assert main(["data", "suggest", str(run), "--pool", str(pool), "--budget", "2", "--strategy", "disagreement",
                 "--out", str(tmp_path)]) == 2
    assert "for trait (regression) runs" in capsys.readouterr().err



def test_badge_parses_and_ranks_with_the_runs_own_head(trained_run, disease_root, pool, tmp_path, capsys):
    run = trained_run(data={"root": str(disease_root)}).run_dir
    assert main(["data", "suggest", str(run), "--pool", str(pool), "--budget", "4", "--strategy", "badge",
                 "--out", str(tmp_path)]) == 0
    assert "(badge)" in capsys.readouterr().out
    rows = _rows(tmp_path / "suggestions.csv")
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"] and len({r["path"] for r in rows}) == 4
    assert all("BADGE: k-means++ on gradient embeddings" in r["reason"] for r in rows)
    assert float(rows[0]["score"]) > 0  # the first pick: the longest gradient


@pytest.mark.parametrize("strategy", ["typiclust", "typical-margin"])
def test_the_low_budget_strategies_parse_and_rank_on_the_tiny_run(trained_run, disease_root, pool, tmp_path, capsys,
                                                                   strategy):
    run = trained_run(data={"root": str(disease_root)}).run_dir
    assert main(["data", "suggest", str(run), "--pool", str(pool), "--budget", "4", "--strategy", strategy,
                 "--out", str(tmp_path)]) == 0
    assert f"({strategy})" in capsys.readouterr().out
    rows = _rows(tmp_path / "suggestions.csv")
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"] and len({r["path"] for r in rows}) == 4
    # the tiny run has more labelled images a class (train + val) than the switch's mark: margin from the start
    assert ("TypiClust" if strategy == "typiclust" else "torn between") in rows[0]["reason"]


def test_a_copy_of_a_test_image_is_never_suggested(trained_run, disease_root, pool, tmp_path):
    """Labelled for training, a copy of a test image would leak into the score: it is left out like any copy."""
    import shutil

    import plantpheno as pp

    run = trained_run(data={"root": str(disease_root)}).run_dir
    test_image = next(Path(r["path"]) for r in _rows(run / "split.csv") if r["split"] == "test")
    shutil.copy(test_image, tmp_path / "copy_of_test.jpg")
    listed = tmp_path / "pool.csv"
    listed.write_text("path\n" + "\n".join(["copy_of_test.jpg", *map(str, sorted(pool.rglob("healthy_*.jpg")))]) + "\n")
    result = pp.suggest(run, pool=listed, budget=2, out=tmp_path / "out", verbose=False)
    assert (tmp_path / "copy_of_test.jpg", f"same picture as labelled {test_image}") in result.skipped
    assert all(s.path.name != "copy_of_test.jpg" for s in result.suggestions)

def test_trait_runs_rank_by_ensemble_disagreement_or_coverage(trained_run, rosette_manifest, tmp_path, capsys):
    from plantpheno.data.synth import synthesize_rosettes

    run = trained_run(task="regression", data={"manifest": str(rosette_manifest)}).run_dir
    new = synthesize_rosettes(tmp_path / "new", plants=6, views_per_plant=2, image_size=48, seed=11)
    import plantpheno as pp

    ranked = pp.suggest(run, pool=new, budget=4, strategy="disagreement", out=tmp_path / "d", verbose=False)
    assert "heads trained on resamples" in ranked.suggestions[0].reason
    assert _rows(tmp_path / "d" / "suggestions.csv")[0]["predicted_value"]
    badge = pp.suggest(run, pool=new, budget=4, strategy="badge", out=tmp_path / "b", verbose=False)
    assert "the heads disagree" in badge.suggestions[0].reason and len({s.path for s in badge.suggestions}) == 4
    default = pp.suggest(run, pool=new, budget=4, out=tmp_path / "k", verbose=False)
    assert default.strategy == "badge"
    assert main(["data", "suggest", str(run), "--pool", str(new), "--budget", "2", "--strategy", "margin"]) == 2
    assert "this run predicts a trait" in capsys.readouterr().err


def test_the_active_learning_benchmark_runs_every_strategy_at_tiny_scale(tmp_path):
    """benchmarks/active_learning.py end to end on 4 classes x 10 synthetic leaves and 10 rosettes: its figures at
    this scale mean nothing; it must run every strategy, time the rounds and write its results with the machine."""
    import json
    import subprocess
    import sys

    from conftest import REPO
    from plantpheno.data.synth import synthesize_disease

    root = synthesize_disease(tmp_path / "leaves", per_class=10, image_size=72, seed=3)
    lines = ["path,label,split"]
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for i, image in enumerate(sorted(folder.glob("*.jpg"))):
            lines.append(f"{image.relative_to(root)},{folder.name},{('val', 'test', 'train', 'train', 'train')[i % 5]}")
    (root / "splits.csv").write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "active_learning.py"), "--data", str(root),
                           "--seeds", "2", "--plants", "10", "--suggest-pool", "10", "--work", str(tmp_path / "work"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads((tmp_path / "out" / "active_learning.json").read_text())
    assert set(result["classes"]["strategies"]) == {"random", "margin", "entropy", "kcenter", "cluster-margin", "badge",
                                                    "typiclust", "probcover", "typical-margin", "typical-badge"}
    assert set(result["traits"]["strategies"]) == {"random", "kcenter", "disagreement", "badge", "typiclust"}
    assert set(result["classes"]["validation"]["strategies"]) == set(result["classes"]["strategies"])
    assert result["classes"]["chosen_on_validation"] in {None, *result["classes"]["strategies"]}
    assert set(result["traits"]["beat_random_on_validation"]) <= set(result["traits"]["strategies"])
    assert result["classes"]["counts"][-1] == result["classes"]["pool"]  # the curve ends with the whole pool
    assert [r["strategy"] for r in result["suggest_rounds"]] == ["margin", "kcenter", "cluster-margin", "badge",
                                                                 "typiclust", "probcover"]
    assert result["machine"]["cpu_model"] and result["machine"]["cpus_online"]
    assert (tmp_path / "out" / "active_learning.png").is_file()

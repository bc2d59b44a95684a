"""benchmarks/adapt_cv.py's rule (10 labelled field images a class, chosen by cross-validation): stratified folds,
and the first candidate within one standard error of the best (candidate, epochs) at its fewest epochs."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_benchmark


def _module():
    return load_benchmark("adapt_cv")


def test_folds_are_stratified_disjoint_and_cover_the_labelled_images():
    cv = _module()
    picked = [(Path(f"{c}{i}.jpg"), c, "train") for c in ("a", "b", "c", "d") for i in range(10)]
    cut = cv.folds(picked, 5, seed=0)
    assert len(cut) == 5 and sorted(row for fold in cut for row in fold) == sorted(picked)
    for fold in cut:
        assert sorted(label for _, label, _ in fold) == ["a", "a", "b", "b", "c", "c", "d", "d"]
    assert cv.folds(picked, 5, seed=0) == cut and cv.folds(picked, 5, seed=1) != cut


def test_choose_takes_the_first_candidate_within_one_se_of_the_best_at_its_fewest_epochs():
    cv = _module()
    # folds x epochs; "head" reaches 0.52 +/- 0 at epoch 3 and stays; "head_bn" is best, 0.40 +/- 0.1 at epoch 2
    curves = {"head": [[0.9, 0.6, 0.52, 0.52], [0.9, 0.6, 0.52, 0.52]],
              "head_bn": [[0.8, 0.3, 0.6, 0.7], [0.8, 0.5, 0.6, 0.7]]}
    choice = cv.choose(curves)
    assert choice["best"]["candidate"] == "head_bn" and choice["best"]["epochs"] == 2
    assert choice["best"]["se"] == pytest.approx(0.1) and choice["bound"] == pytest.approx(0.5)
    assert (choice["candidate"], choice["epochs"]) == ("head_bn", 2)  # head's 0.52 is past the bound
    curves["head"] = [[0.9, 0.6, 0.49, 0.45], [0.9, 0.6, 0.49, 0.45]]  # now within: the earlier candidate wins
    choice = cv.choose(curves)
    assert (choice["candidate"], choice["epochs"]) == ("head", 3)  # its fewest epochs within the bound


def test_the_val_nll_curve_is_read_from_the_runs_metrics_log(tmp_path):
    cv = _module()
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "val/loss": 0.7}\n{"epoch": 2, "val/loss": 0.5}\n')
    assert cv.val_nll_curve(tmp_path) == [0.7, 0.5]


def test_a_chosen_epoch_count_is_the_first_epochs_of_the_candidates_full_run():
    cv = _module()
    blocks = cv.CANDIDATES["head_then_blocks"][0]  # 10 head epochs, then 10 of the last blocks
    assert cv.schedule(blocks, 7) == blocks | {"training.epochs": 7, "training.fine_tune.epochs": 0}
    assert (cv.schedule(blocks, 13)["training.epochs"], cv.schedule(blocks, 13)["training.fine_tune.epochs"]) == (10, 3)
    head = cv.CANDIDATES["head"][0]
    assert cv.schedule(head, 12)["training.epochs"] == 12 and cv.schedule(head, 12)["training.fine_tune.epochs"] == 0
    with pytest.raises(ValueError, match="1 to 30"):
        cv.schedule(head, 31)
    # every candidate: a constant rate and the last epoch kept, so a prefix of the CV curve is a run to retrain
    for spec, _ in cv.CANDIDATES.values():
        assert spec["training.scheduler"] == "none" and spec["training.keep"] == "last"
    quick = cv.full_length(blocks, quick=True)
    assert quick["training.epochs"] + quick["training.fine_tune.epochs"] == 3 and quick["training.fine_tune.epochs"]

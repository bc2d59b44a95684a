"""benchmarks/active_learning.py's rule for the default strategy, on made-up validation summaries."""

from __future__ import annotations

from conftest import load_benchmark


def _choose():
    return load_benchmark("active_learning").choose


def _summary(**strategies: tuple[float, float, float | None]) -> dict:
    """name=(gain at 5 %, its interval's low end, labels relative to random)."""
    def one(gain: float, low: float, ratio: float | None) -> dict:
        return {"at_5%_minus_random": {"mean": gain, "low": low, "high": 2 * gain - low},
                "labels_vs_random_median": ratio, "auc": {"mean": 0.9}}

    return {"strategies": {"random": one(0.0, 0.0, 1.0), **{n: one(*v) for n, v in strategies.items()}}}


def test_a_strategy_that_meets_both_goals_wins_over_one_that_needs_fewer_labels_only():
    choose = _choose()
    summary = _summary(fast=(0.02, -0.01, 0.35), both=(0.06, 0.004, 0.41), early=(0.07, 0.01, 0.60))
    assert choose(summary, lower_is_better=False) == "both"
    del summary["strategies"]["both"]
    assert choose(summary, lower_is_better=False) == "fast"  # then the goal in labels, as before
    del summary["strategies"]["fast"]
    assert choose(summary, lower_is_better=False) == "early"
    assert choose(_summary(behind=(-0.01, -0.05, 0.3)), lower_is_better=False) is None

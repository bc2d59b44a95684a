"""Evaluation: metrics with intervals, baselines, calibration, test-time augmentation, reports and figures."""

"""Records that cross packages, each with one home that builds, reads and writes it.

- :mod:`plantpheno.records.model_meta`: what a checkpoint and a model package record to rebuild a model and apply
  it (task, classes or trait scaling, preprocessing, bands, temperature, TTA, lineage), with its version and the
  one migration of older files.
- :mod:`plantpheno.records.evaluation`: one evaluation of a split (``eval/<split>/metrics.json``): headline metric
  and its interval, the trivial baseline and the verdict on it, calibration, TTA, per-class rows.

They sit at the bottom layer (they import only pydantic and plantpheno.errors), so data, evaluation, training,
registry, api and the command line all read them. Outside this package no module reads their fields by string key
(tests/unit/test_record_keys.py scans the source).
"""

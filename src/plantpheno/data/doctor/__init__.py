"""The data doctor: checks a dataset before training and says what is wrong, how much, and how to fix it.

One module per family of checks (:mod:`.duplicates`, :mod:`.labels`, :mod:`.quality`, :mod:`.shortcut`,
:mod:`.label_errors`), one entry point (:func:`plantpheno.data.doctor.check.check_data`) and one result
(:class:`plantpheno.data.doctor.findings.DataCheckReport`, written as ``data_check.json``). The pixel measures
come from the image check's single decode (:mod:`.pixels`). :mod:`.runner` runs the checks of a config (memoised
report, what an error finding does); checks that need a network get its features from a function the caller
passes in (:mod:`plantpheno.training.doctor_features`): data never imports models.

This package's ``__init__`` stays light (the config schema imports :mod:`.ids`).
"""

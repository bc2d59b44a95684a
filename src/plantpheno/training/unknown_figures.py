"""The run's OOD detector in the evaluation record (``Evaluation.unknowns``): the share of a split's or another
source's images it flags unknown, with Wilson intervals, accuracy on the images it keeps and on those it flags, and on
another source how far the score tells it from the in-source test split (AUROC, FPR95, bootstrap intervals).

The detector itself is fitted and applied to a split in :mod:`plantpheno.training.unknowns`, and to another source in
:mod:`plantpheno.training.source_unknowns`; this module builds the typed record that ``metrics.json`` carries and the
trackers log.
"""

from __future__ import annotations

import numpy as np

from plantpheno.config import Config
from plantpheno.errors import ConfigError
from plantpheno.evaluation import ood, selective
from plantpheno.files.atomic import atomic_write_text
from plantpheno.records.evaluation import Share, Unknowns, read_evaluation
from plantpheno.run.folder import RunDir


def share(count: int, num_images: int, confidence: float) -> Share:
    """``count`` of ``num_images``, its fraction and Wilson interval (None for no image)."""
    interval = selective.wilson(count, num_images, confidence)
    return Share(count=count, num_images=num_images, fraction=count / num_images if num_images else None,
                 low=interval[0] if interval else None, high=interval[1] if interval else None,
                 confidence=confidence)


def _accuracy(correct: np.ndarray | None, chosen: np.ndarray, confidence: float) -> Share | None:
    if correct is None or not chosen.any():
        return None
    return share(int(correct[chosen].sum()), int(chosen.sum()), confidence)


def unknowns_record(detector: ood.OODDetector, flagged: np.ndarray, *, correct: np.ndarray | None,
                    confidence: float, **more: object) -> Unknowns:
    """The record of ``flagged`` (one bool per image); ``correct`` (one bool per image with a run class, the
    first ones of ``flagged``) gives the accuracy on kept and on flagged images. ``more``: the other fields."""
    flagged = np.asarray(flagged, dtype=bool)
    val_flagged = detector.num_val_images - int(round(detector.val_kept * detector.num_val_images))
    scored = flagged[:len(correct)] if correct is not None else flagged
    return Unknowns(score=detector.score, threshold=detector.threshold, keep=detector.keep,
                    flagged=share(int(flagged.sum()), len(flagged), confidence),
                    val=share(val_flagged, detector.num_val_images, confidence) if detector.num_val_images else None,
                    known_accuracy=_accuracy(correct, ~scored, confidence),
                    unknown_accuracy=_accuracy(correct, scored, confidence), **more)


def record_in_evaluation(run: RunDir, split: str, unknowns: Unknowns) -> None:
    """Add ``unknowns`` to ``eval/<split>/metrics.json`` (rewritten atomically; the other fields as they were)."""
    path = run.eval(split).metrics
    evaluation = read_evaluation(path)
    atomic_write_text(path, evaluation.model_copy(update={"unknowns": unknowns}).to_json())


def check_can_fit(config: Config, run: RunDir, *, fit: bool) -> Config:
    """The run's ``config``, checked, when ``fit`` (``evaluate --fit-unknowns``), to allow a detector (one clear
    message when it does not)."""
    if not fit:
        return config
    # a data.bands run is left to detect_unknowns, which says whether band inputs get a detector
    if not config.evaluation.ood.enabled:
        raise ConfigError(f"{run.path}/config.yaml sets evaluation.ood.enabled: false, so --fit-unknowns would fit "
                          f"no detector; set it to true in that file to fit one")
    return config


def summary_line(unknowns: Unknowns) -> str:
    """One line for ``evaluate --data``: the flagged share and the separation from the in-source test split."""
    f = unknowns.flagged
    text = (f"  flagged unknown by {unknowns.score}: {f.count} of {f.num_images} ({f.fraction or 0:.1%}, "
            f"{f.confidence:.0%} CI {f.low or 0:.1%} to {f.high or 0:.1%})")
    sep = unknowns.separation
    if sep is not None:
        a = sep.auroc
        text += f"; AUROC vs in-source test {a.estimate:.3f}" + (f" (CI {a.low:.3f} to {a.high:.3f})" if a.known
                                                                  else "")
    return text

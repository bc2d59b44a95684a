"""Evaluating a trained classifier on another image source (``plantpheno evaluate RUN --data DIR_OR_CSV``).

The other source (an image folder or a CSV manifest) is read, its labels mapped to the run's classes by a class
map (:mod:`plantpheno.data.class_map`), every image predicted with the run's best weights and its temperature,
and ``RUN_DIR/eval/<name>/`` written like a split's evaluation, with the figures of the shift on top
(:mod:`plantpheno.evaluation.shift`): the drop from the in-source test figures, per-class drops, calibration on the
other source, how far the data doctor's border classifier tells the two sources apart, the images expected to be
unknown, and the worst errors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from plantpheno.config import Config, DataConfig, SourceConfig
from plantpheno.files.csvfile import read_csv, write_csv
from plantpheno.data.class_map import ClassMap, MappedSource, load_class_map, map_source
from plantpheno.data.datasets import ImageDataset, collate
from plantpheno.data.images import check_images
from plantpheno.data.sources import SPLITS, Sample, read_folder, read_manifest
from plantpheno.data.transforms import eval_transform
from plantpheno.device import resolve_device
from plantpheno.errors import ArgumentError, DataError
from plantpheno.evaluation.calibration import softmax
from plantpheno.evaluation.inference import predict
from plantpheno.evaluation.report import write_evaluation
from plantpheno.evaluation.shift import CalibrationSet, shift_summary, worst_errors
from plantpheno.models import build_model
from plantpheno.records.evaluation import Evaluation, Unknowns
from plantpheno.records.model_meta import ModelMeta
from plantpheno.reporting import Reporter, default_reporter
from plantpheno.run.folder import RunDir
from plantpheno.training.checkpoint import load_checkpoint
from plantpheno.training.objectives import Classification
from plantpheno.training.source_unknowns import source_unknowns
from plantpheno.training.unknown_figures import summary_line as unknown_summary_line

UNMAPPED_FILE = "unmapped.csv"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class SourceSpec:
    """One other source: where its images are, its class map (None: labels named as the run's classes), the
    name of its evaluation folder (None: from the data's file or folder name) and other labelled images of the
    same source to fit its temperature on (None: no such fit; never the evaluated images)."""

    data: Path
    class_map: Path | None = None
    name: str | None = None
    calibrate_on: Path | None = None

    @classmethod
    def of(cls, entry: SourceConfig) -> SourceSpec:
        """The spec of an ``evaluation.sources`` entry."""
        return cls(entry.data, entry.class_map, entry.name, entry.calibrate_on)


def source_name(spec: SourceSpec) -> str:
    """The checked name of ``eval/<name>/``: a plain file name that is not one of the run's own splits."""
    name = spec.name if spec.name is not None else spec.data.stem if spec.data.suffix else spec.data.name
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in SPLITS:
        raise ArgumentError(f"name {name!r} of the evaluation on {spec.data} must be 1-64 letters, digits, '_', '.' "
                            f"or '-' (starting with a letter or digit) and not one of the run's splits "
                            f"({', '.join(SPLITS)}); give one with --name")
    return name


def is_source_name(name: str) -> bool:
    """Whether ``name`` can name an evaluation on another source (``eval/<name>/``)."""
    return bool(_NAME.fullmatch(name)) and name not in SPLITS


def evaluate_source(run_dir: Path, spec: SourceSpec, *, device: str | None = None,
                    reporter: Reporter | None = None) -> Evaluation:
    """Evaluate a run's best checkpoint on another source and write ``RUN_DIR/eval/<name>/``; returns its
    evaluation (that of ``metrics.json``, with ``source``, ``shift`` and ``separability``)."""
    reporter = default_reporter(reporter)
    run = RunDir.of(run_dir)
    config = run.read_config()
    with run.lock("evaluating another source"):
        path = run.checkpoint_to_use()
        if path is None:
            raise DataError(f"{run.path} has no checkpoint yet ({run.best_checkpoint} is missing)")
        checkpoint = load_checkpoint(path)
        meta = ModelMeta.from_checkpoint(checkpoint, source=path)
        _check_classification(run, meta)
        model = build_model(config.model.model_copy(update={"pretrained": False}), num_outputs=meta.num_outputs)
        model.load_state_dict(checkpoint["model"])
        target = resolve_device(device or config.device)
        metrics = evaluate_loaded(model.to(target), run, spec, config=config, meta=meta, device=target,
                                  checkpoint_epoch=checkpoint["state"]["epoch"], reporter=reporter)
        if config.evaluation.report and run.eval("test").metrics.is_file():  # its "On another source" section
            from plantpheno.evaluation.html_report import write_report_or_warn

            write_report_or_warn(run, "test", model=model, meta=meta, reporter=reporter)
        return metrics


def evaluate_loaded(model: nn.Module, run: RunDir, spec: SourceSpec, *, config: Config, meta: ModelMeta,
                    device: torch.device, checkpoint_epoch: int | None, reporter: Reporter,
                    in_source: tuple[list[Path], np.ndarray] | None = None) -> Evaluation:
    """:func:`evaluate_source` with the model already built (the end of ``train``, which holds the run's lock);
    ``in_source``: the run's test images and their pooled features from the test split's evaluation pass."""
    names = _check_classification(run, meta)
    name = source_name(spec)
    class_map = load_class_map(spec.class_map, names) if spec.class_map is not None else ClassMap()
    samples, bad = readable_images(read_source(spec.data, config), spec.data, config.data, reporter)
    source = map_source(samples, class_map, names, source=str(spec.data))
    calibration = (read_calibration(spec, class_map, source, names, config=config, reporter=reporter)
                   if spec.calibrate_on is not None else None)
    ev = config.evaluation
    reporter.info(f"evaluating on {spec.data} ({len(source.mapped)} images with a run class, {len(source.unmapped)} "
                  f"expected unknown) -> {run.eval(name).path}")
    if source.unused_keys:
        reporter.warning(f"class map {spec.class_map}: no image of {spec.data} carries the label(s) "
                         f"{', '.join(source.unused_keys)}")
    # one pass for the predictions and the pooled features the detector scores (evaluation.one_pass)
    logits, features = _predict(model, [s.path for s, _ in source.mapped] + [s.path for s in source.unmapped],
                                batch_size=config.data.batch_size, tta=ev.tta, meta=meta, device=device)
    mapped, rest = logits[:len(source.mapped)], logits[len(source.mapped):]
    y = np.array([c for _, c in source.mapped], dtype=np.int64)
    temperature, applied = _temperature(run)
    test = _test_predictions(run, names)
    shift = shift_summary(source_logits=mapped, source_targets=y, test_targets=test[0] if test else None,
                          test_predicted=test[1] if test else None, class_names=names, temperature=temperature,
                          temperature_applied=applied, bins=ev.calibration_bins,
                          bootstrap_samples=ev.bootstrap_samples, confidence=ev.confidence, seed=config.seed,
                          calibration_set=_calibration_set(model, spec, calibration, config=config, meta=meta,
                                                           device=device, reporter=reporter))
    paths = [s.path for s, _ in source.mapped]
    found = source_unknowns(model, run, paths + [s.path for s in source.unmapped], correct=mapped.argmax(1) == y,
                            meta=meta, evaluation=config.evaluation, batch_size=config.data.batch_size,
                            seed=config.seed, device=device, reporter=reporter, features=features,
                            in_source=in_source)
    block = _source_block(spec, source, class_map, rest, temperature, names)
    block["unreadable"] = [[str(p), why] for p, why in bad]  # left out (data.on_bad_image: skip)
    extra = {"split": name, "num_images": len(y), "checkpoint_epoch": checkpoint_epoch, "source": block,
             "shift": shift, "separability": _separability(run, source, config, reporter),
             "worst_errors": worst_errors([str(p) for p in paths], mapped, y, names, temperature=temperature,
                                          limit=ev.report_examples)}
    if found is not None:
        extra["unknowns"] = found[0].to_dict()
        block["unknown"] = {**block["unknown"], "flagged_by": f"the run's OOD detector ({found[0].score}, fitted on "
                            f"train/val) and the class map"}
    if test is None:
        extra["shift"]["no_drop"] = (f"no in-source test evaluation ({run.eval('test').predictions} is missing): run "
                                     f"plantpheno evaluate {run.path} --split test first")
    out = run.eval(name)
    evaluation = write_evaluation(out, targets=y, outputs=softmax(mapped, temperature).astype(np.float32), paths=paths,
                               class_names=names, bootstrap_samples=ev.bootstrap_samples, confidence=ev.confidence,
                               seed=config.seed, extra=extra, columns=_ood_columns(found, 0, len(y)))
    _write_unmapped(out.path / UNMAPPED_FILE, source.unmapped, rest, temperature, names,
                    _ood_columns(found, len(y), len(y) + len(source.unmapped)))
    return evaluation


def read_source(data: Path, config: Config) -> list[Sample]:
    """The images of another source: an image folder (``root/<label>/<image>``) or a CSV manifest (``path``
    and ``label`` columns, paths relative to the manifest's folder)."""
    if data.is_dir():
        return read_folder(data, extensions=config.data.extensions)
    if data.is_file():
        return read_manifest(data, root=None, task="classification")
    raise DataError(f"--data {data} does not exist; expected an image folder (root/<label>/<image>) or a CSV "
                    f"manifest (path,label)")


def _calibration_set(model: nn.Module, spec: SourceSpec, found: MappedSource | None, *, config: Config,
                     meta: ModelMeta, device: torch.device, reporter: Reporter) -> CalibrationSet | None:
    """The logits and classes of the calibration images (``spec.calibrate_on`` as :func:`read_calibration` read
    it), on which the source's own temperature is fitted."""
    if found is None:
        return None
    reporter.info(f"fitting the source's temperature on {len(found.mapped)} labelled images of {spec.calibrate_on}")
    logits = _logits(model, [s.path for s, _ in found.mapped], config=config, meta=meta, device=device)
    return CalibrationSet(logits, np.array([c for _, c in found.mapped], dtype=np.int64), str(spec.calibrate_on))


def read_calibration(spec: SourceSpec, class_map: ClassMap, source: MappedSource, names: list[str], *,
                     config: Config, reporter: Reporter | None) -> MappedSource:
    """``spec.calibrate_on`` read and mapped like the source; an image it shares with the source is an error (a
    temperature fitted on the images it is judged on would flatter it)."""
    assert spec.calibrate_on is not None
    where = spec.calibrate_on
    samples, _ = readable_images(read_source(where, config), where, config.data, reporter)
    found = map_source(samples, class_map, names, source=str(where))
    evaluated = {Path(s.path).resolve() for s, _ in source.mapped} | {Path(s.path).resolve() for s in source.unmapped}
    shared = [s.path for s, _ in found.mapped if Path(s.path).resolve() in evaluated]
    if shared:
        raise ArgumentError(f"calibration images {where} share {len(shared)} image(s) with the evaluated source "
                            f"{spec.data} (e.g. {shared[0]}); expected other labelled images of that source (a "
                            f"validation set), never the images the temperature is judged on")
    return found


def _check_classification(run: RunDir, meta: ModelMeta) -> list[str]:
    """The run's class names; a regression run cannot be evaluated through a class map."""
    if not meta.is_classification or not meta.class_names:
        raise DataError(f"{run.path} is a {meta.task} run: evaluation on another source with a class map "
                        f"needs a classification run")
    return list(meta.class_names)


def _logits(model: nn.Module, paths: list[Path], *, config: Config, meta: ModelMeta,
            device: torch.device) -> np.ndarray:
    """Raw outputs (TTA-averaged as the run evaluates) for ``paths``, in order."""
    return _predict(model, paths, batch_size=config.data.batch_size, tta=config.evaluation.tta, meta=meta,
                    device=device, features=False)[0]


def _predict(model: nn.Module, paths: list[Path], *, batch_size: int, tta: str, meta: ModelMeta, device: torch.device,
             features: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw outputs (TTA-averaged as the run evaluates) for ``paths``, in order, and with ``features`` the pooled
    features of the same pass (None where the model does not give them: the detector then passes the images)."""
    size = meta.image_size
    transform = eval_transform(size, meta.mean, meta.std, meta.resize)
    dataset = ImageDataset(paths, [0] * len(paths), transform, regression=False, min_side=size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=[(i, 0) for i in range(len(paths))],
                        collate_fn=collate, num_workers=0)
    try:
        found = predict(model, loader, task=Classification(list(meta.class_names or [])), device=device,
                        tta=tta, features=features)
    except OSError as exc:
        raise DataError(f"an image of the other source cannot be read ({exc}); it passed the check before "
                        f"predicting, so it changed since") from None
    assert found.raw is not None
    return found.raw.astype(np.float64), found.features


def _temperature(run: RunDir) -> tuple[float, bool]:
    """The run's softmax temperature (fitted on its own validation split), and whether it is applied."""
    if not run.temperature.is_file():
        return 1.0, False
    record = json.loads(run.temperature.read_text(encoding="utf-8"))
    return float(record.get("temperature", 1.0)), bool(record.get("applied", False))


def _test_predictions(run: RunDir, names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(true, predicted) class indices of the run's in-source test evaluation, if it has one."""
    path = run.eval("test").predictions
    if not path.is_file():
        return None
    index = {n: i for i, n in enumerate(names)}
    with read_csv(path) as reader:
        rows = [(index[r["label"]], index[r["predicted"]]) for r in reader]
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def _source_block(spec: SourceSpec, source: MappedSource, class_map: ClassMap, rest: np.ndarray,
                  temperature: float, names: list[str]) -> dict[str, Any]:
    """What the other source held and what the model answered on the images it has no class for."""
    total = len(source.mapped) + len(source.unmapped)
    block: dict[str, Any] = {
        "data": str(spec.data), "class_map": class_map.origin, "mapping": class_map.mapping or None,
        "images": total, "mapped": len(source.mapped), "unmapped": len(source.unmapped),
        "unmapped_fraction": len(source.unmapped) / total, "labels": source.labels,
        "unused_map_entries": list(source.unused_keys),
        # no out-of-distribution score in this run: images the map leaves out are counted, not flagged
        "unknown": {"flagged_by": "class map only (the run has no out-of-distribution score)"},
    }
    if len(rest):
        conf = softmax(rest, temperature).max(1)
        block["unknown"].update(mean_confidence=float(conf.mean()), confident_share=float((conf >= 0.9).mean()),
                                answered_as={n: int(c) for n, c in zip(names, np.bincount(
                                    rest.argmax(1), minlength=len(names)))})
    return block


def _separability(run: RunDir, source: MappedSource, config: Config, reporter: Reporter) -> dict[str, Any]:
    """The border classifier telling the run's own images (all its splits) from the other source's."""
    from plantpheno.data.doctor.sources_apart import sources_apart

    if not run.split_manifest.is_file():
        return {"accuracy": None, "reason": f"{run.split_manifest} is missing"}
    own = [s.path for s in read_manifest(run.split_manifest, root=None, task="classification", exact=True)]
    other = [s.path for s, _ in source.mapped] + [s.path for s in source.unmapped]
    found = sources_apart(own, other, seed=config.seed)
    if found.get("accuracy") is not None:
        reporter.info(f"border classifier tells the run's own images from the other source's with "
                      f"{found['accuracy']:.1%} accuracy (majority {found['majority']:.1%})")
    return found


def _write_unmapped(path: Path, samples: list[Sample], logits: np.ndarray, temperature: float,
                    names: list[str], columns: dict[str, list[str]]) -> None:
    """What the model answered on each image expected to be unknown (and the OOD score and flag, with a detector)."""
    rows: list[list[object]] = [["path", "label", "predicted", "confidence", *columns]]
    if len(samples):
        probs = softmax(logits, temperature)
        rows += [[str(s.path), str(s.target), names[int(p.argmax())], f"{float(p.max()):.6f}",
                  *(values[i] for values in columns.values())] for i, (s, p) in enumerate(zip(samples, probs))]
    write_csv(path, rows)


def _ood_columns(found: tuple[Unknowns, np.ndarray, np.ndarray] | None, start: int, stop: int) -> dict[str, list[str]]:
    """``ood_score`` and ``unknown`` of the images ``start:stop`` (none without a detector)."""
    if found is None:
        return {}
    _, scores, flagged = found
    return {"ood_score": [f"{v:.6f}" for v in scores[start:stop]],
            "unknown": ["true" if f else "false" for f in flagged[start:stop]]}


def readable_images(samples: list[Sample], data: Path, settings: DataConfig,
                    reporter: Reporter | None) -> tuple[list[Sample], list[tuple[Path, str]]]:
    """Every image of another source decoded once before any is predicted: the readable ones and the others with
    why. As train's image check: all the bad ones named in one DataError, or with ``data.on_bad_image: skip`` a
    warning and the rest kept."""
    checks = check_images([s.path for s in samples], max_pixels=settings.max_image_pixels)
    bad = [(c.path, str(c.problem)) for c in checks if c.problem is not None]
    if not bad:
        return samples, []
    listing = "\n  ".join(f"{p}: {why}" for p, why in bad[:200])
    more = f"\n  ... and {len(bad) - 200} more" if len(bad) > 200 else ""
    if settings.on_bad_image != "skip":
        raise DataError(f"{len(bad)} of {len(samples)} image(s) of {data} cannot be used (repair or remove "
                        f"them, or set data.on_bad_image: skip, in the run's config.yaml for evaluate, to leave them "
                        f"out):\n  "
                        f"{listing}{more}")
    if reporter is not None:
        reporter.warning(f"{len(bad)} of {len(samples)} image(s) of {data} cannot be used and are left out "
                         f"(data.on_bad_image=skip):\n  {listing}{more}")
    good = [s for s, c in zip(samples, checks) if c.problem is None]
    if not good:
        raise DataError(f"none of the {len(samples)} images of {data} could be read")
    return good, bad


def summary_lines(evaluation: Evaluation) -> list[str]:
    """The lines ``plantpheno evaluate --data`` prints."""
    src, shift = evaluation.source or {}, evaluation.shift or {}
    ci = evaluation.interval
    lines = [f"{evaluation.split} ({src['mapped']} images with a run class): accuracy "
             f"{_figure(evaluation.value('accuracy'))}"
             + (f" ({ci.confidence:.0%} CI {ci.low:.4f} to {ci.high:.4f})" if ci is not None else "")
             + f"  macro-F1 {_figure(evaluation.value('macro_f1'))}"]
    drop = (shift.get("drop") or {}).get("accuracy")
    if drop:
        interval = f" (CI {drop['low']:.4f} to {drop['high']:.4f})" if drop["low"] is not None else ""
        lines.append(f"  drop from the in-source test accuracy {drop['in_source']:.4f}: {drop['drop']:.4f}{interval}")
    shift_cal = shift["calibration"]
    after = shift_cal.get("ece_after")
    lines.append(f"  ECE {_with_ci(shift_cal['ece_before'])} before the temperature"
                 + (f", {_with_ci(after)} after (T = {shift_cal['temperature']:.3g})" if after else ""))
    own = shift_cal.get("source_temperature")
    if own is not None:
        lines.append(f"  ECE {_with_ci(own['ece_after'])} after the source's temperature (T = {own['temperature']:.3g}, "
                     f"fitted on {own['num_images']} images of {own['fitted_on']})" if own["applied"]
                     else f"  no source temperature: {own['not_applied']}")
    lines.append(f"  expected unknown (labels without a run class): {src['unmapped']} of {src['images']} "
                 f"({src['unmapped_fraction']:.1%})")
    if evaluation.unknowns is not None:
        lines.append(unknown_summary_line(evaluation.unknowns))
    sep = evaluation.separability or {}
    if sep.get("accuracy") is not None:
        lines.append(f"  sources apart by their borders: {sep['accuracy']:.1%} (majority {sep['majority']:.1%})")
    return lines


def _with_ci(block: dict[str, Any]) -> str:
    ci = f" (CI {block['low']:.4f} to {block['high']:.4f})" if block.get("low") is not None else ""
    return f"{block['estimate']:.4f}{ci}"


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def check_sources(config: Config, class_names: list[str] | None) -> None:
    """Before training: every ``evaluation.sources`` entry can be read and mapped (a bad class map or an empty
    source fails now, not after the training it would follow)."""
    if not config.evaluation.sources:
        return
    if class_names is None:
        raise DataError("evaluation.sources needs a classification run (task: classification); this config trains "
                        "a regression")
    for i, entry in enumerate(config.evaluation.sources):
        spec = SourceSpec.of(entry)
        where = f"evaluation.sources[{i}]"
        try:
            source_name(spec)
            class_map = load_class_map(spec.class_map, class_names) if spec.class_map is not None else ClassMap()
            samples, _ = readable_images(read_source(spec.data, config), spec.data, config.data, None)
            source = map_source(samples, class_map, class_names, source=str(spec.data))
            if spec.calibrate_on is not None:
                read_calibration(spec, class_map, source, class_names, config=config, reporter=None)
        except (DataError, ArgumentError) as exc:  # the config's field named, not the command line's
            raise DataError(f"{where}: {str(exc).replace('; give one with --name', '; set its name')}") from None


def evaluate_sources(model: nn.Module, run: RunDir, *, config: Config, meta: ModelMeta, device: torch.device,
                     checkpoint_epoch: int | None, reporter: Reporter,
                     in_source: tuple[list[Path], np.ndarray] | None = None) -> None:
    """The end of ``train``: each ``evaluation.sources`` entry, evaluated with the best weights (a failure warns:
    the trained run stands, and ``plantpheno evaluate RUN --data`` can redo it); ``in_source``: the test images'
    paths and pooled features from the test split's evaluation, which the detector's separation scores reuse."""
    for entry in config.evaluation.sources:
        spec = SourceSpec.of(entry)
        try:
            evaluation = evaluate_loaded(model, run, spec, config=config, meta=meta, device=device,
                                         checkpoint_epoch=checkpoint_epoch, reporter=reporter, in_source=in_source)
        except Exception as exc:  # noqa: BLE001 - the run is trained and evaluated in source; this is extra
            reporter.warning(f"evaluating on {spec.data} failed ({type(exc).__name__}: {exc}); retry with "
                             f"plantpheno evaluate {run.path} --data {spec.data}")
            continue
        for line in summary_lines(evaluation):
            reporter.info(line)

"""The one path from a config to a trained, evaluated run: ``train()`` and ``evaluate_run()``."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from plantpheno import __version__, distributed
from plantpheno.config import Config, config_to_dict, validate_config
from plantpheno.data.datasets import (
    DATASET_INFO,
    SPLIT_MANIFEST,
    PreparedData,
    build_loaders,
    close_loaders,
    prepare_data,
    write_data_files,
)
from plantpheno.data.sources import SPLITS
from plantpheno.device import amp_dtype, resolve_device, seed_everything, set_threads
from plantpheno.distributed import DistContext
from plantpheno.errors import ConfigError, DataError, RunDirError, TrainingError
from plantpheno.evaluation.plots import plot_training_curves
from plantpheno.evaluation.predict import predict
from plantpheno.evaluation.report import write_evaluation
from plantpheno.models import build_model, input_format, normalization, to_channels_last, wants_channels_last
from plantpheno.rundir import (
    CHECKPOINTS,
    EVAL_DIR,
    METRICS_LOG,
    create_run_dir,
    read_run_config,
    write_environment,
    write_run_config,
    write_status,
)
from plantpheno.tracking.lifecycle import log_run_results, open_run_tracking
from plantpheno.tracking.session import TrackerSet, TrackingCallback
from plantpheno.training.callbacks import BEST, LAST, Checkpointer, Console, EarlyStopping, MetricsLog
from plantpheno.training.checkpoint import load_checkpoint, restore_rng
from plantpheno.training.losses import build_loss
from plantpheno.training.optim import build_optimizer, build_scheduler, steps_per_batch
from plantpheno.training.tasks import Classification, Regression
from plantpheno.training.features import CachedHead
from plantpheno.training.trainer import EarlyExit, Interrupted, NonFiniteLossError, Trainer, TrainState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Where a finished run lives and its final evaluation metrics."""

    run_dir: Path
    metrics: dict[str, Any]
    state: TrainState


@dataclass
class _Setup:
    config: Config
    prepared: PreparedData
    task: Classification | Regression
    model: nn.Module
    loaders: dict[str, DataLoader]
    device: torch.device
    meta: dict[str, Any]
    dist: DistContext
    cached: dict[str, Any] = field(default_factory=dict)  # backbone outputs shared by the training phases


def _setup(config: Config, *, manifest: Path | None, load_pretrained: bool,
           dist: DistContext = DistContext(), splits: Sequence[str] = SPLITS) -> _Setup:
    """Data, task, model and loaders, identically for a new run, a resumed run and an evaluation."""
    prepared = prepare_data(config, manifest_override=manifest)
    if prepared.class_names is not None:
        task: Classification | Regression = Classification(prepared.class_names)
    else:
        task = Regression(*prepared.target_stats())
    model_cfg = config.model if load_pretrained else config.model.model_copy(update={"pretrained": False})
    model = build_model(model_cfg, num_outputs=task.num_outputs)
    if config.training.fine_tune.epochs:  # a bad block count fails here, not after the head phase
        from plantpheno.training.fine_tune import last_groups

        last_groups(model, config.training.fine_tune.blocks)
    mean, std = normalization(model, config)
    device = resolve_device(config.device)
    if wants_channels_last(config.training.channels_last, device, model):
        to_channels_last(model)  # before any pass: caches, training and evaluation all run in this format
    loaders = build_loaders(prepared, config, mean=mean, std=std, pin_memory=device.type == "cuda",
                            rank=dist.rank, world=dist.world_size, splits=splits, device_type=device.type)
    meta = {
        "plantpheno_version": __version__, "task": task.name, "backbone": config.model.backbone,
        "num_outputs": task.num_outputs, "class_names": prepared.class_names,
        "target_mean": getattr(task, "mean", None), "target_std": getattr(task, "std", None),
        "image_size": config.data.image_size, "mean": list(mean), "std": list(std),
        "dataset_fingerprint": prepared.fingerprint,
    }
    return _Setup(config, prepared, task, model.to(device), loaders, device, meta, dist)


def train(config: Config, *, callbacks: Sequence[object] = (), handle_signals: bool = True) -> RunResult:
    """Train a new run from ``config``, evaluate it, and return where it is.

    Under torchrun every rank calls this; rank 0 creates the run directory and tells the others.
    """
    dist, config = _join_job(config)
    setup = None
    try:
        seed_everything(config.seed, deterministic=config.deterministic)
        set_threads(config.training.threads, processes_per_machine=distributed.local_world_size())
        # Data and model first: a bad image or backbone fails before any run folder exists.
        setup = _setup(config, manifest=None, load_pretrained=True, dist=dist)
        run_dir = dist.broadcast(_new_run_dir(setup) if dist.is_main else None)
        return _fit_and_evaluate(setup, run_dir, checkpoint=None, callbacks=callbacks,
                                 handle_signals=handle_signals)
    finally:
        _release(setup, dist)


def _release(setup: _Setup | None, dist: DistContext) -> None:
    """End of a run, however it ended: stop the loader workers and leave the process group."""
    try:
        if setup is not None:
            close_loaders(setup.loaders)
    finally:
        distributed.shutdown(dist)


def _new_run_dir(setup: _Setup) -> Path:
    run_dir = create_run_dir(setup.config)
    write_run_config(run_dir, setup.config)
    write_data_files(setup.prepared, run_dir)
    write_environment(run_dir, str(setup.device))
    return run_dir


def _join_job(config: Config) -> tuple[DistContext, Config]:
    """Join the torchrun job, if this process is part of one; each rank gets its own device."""
    dist, device = distributed.init(distributed.from_environment(), config.device,
                                    timeout_s=config.distributed.timeout_s)
    if dist.enabled and device != config.device:
        config = validate_config({**config_to_dict(config), "device": device}, source="torchrun")
    if config.distributed.sync_batchnorm and dist.enabled and not device.startswith("cuda"):
        raise ConfigError("distributed.sync_batchnorm needs CUDA GPUs (NCCL); it does not work on CPU/gloo — "
                          "set it to false for CPU runs")
    return dist, config


def resume(run_dir: Path, *, callbacks: Sequence[object] = (), handle_signals: bool = True) -> RunResult:
    """Continue an interrupted run from ``checkpoints/last.pt``, exactly where it stopped (same world size),
    on any number of processes."""
    dist, config = _join_job(read_run_config(run_dir))
    setup = None
    try:
        checkpoint = load_checkpoint(run_dir / CHECKPOINTS / LAST)
        seed_everything(config.seed, deterministic=config.deterministic)
        set_threads(config.training.threads, processes_per_machine=distributed.local_world_size())
        setup = _setup(config, manifest=run_dir / SPLIT_MANIFEST, load_pretrained=False, dist=dist)
        _check_same_data(run_dir, setup.prepared)
        return _fit_and_evaluate(setup, run_dir, checkpoint=checkpoint, callbacks=callbacks,
                                 handle_signals=handle_signals)
    finally:
        _release(setup, dist)


def _check_same_data(run_dir: Path, prepared: PreparedData) -> None:
    recorded = json.loads((run_dir / DATASET_INFO).read_text(encoding="utf-8"))["fingerprint"]
    if recorded != prepared.fingerprint:
        raise DataError(
            f"the images of {run_dir} changed since the run started (dataset fingerprint {prepared.fingerprint[:12]} "
            f"!= recorded {recorded[:12]}); start a new run instead of resuming"
        )


def _build_trainer(setup: _Setup, run_dir: Path, checkpoint: dict[str, Any] | None,
                   callbacks: Sequence[object], *, fine_tune: bool = False, state: TrainState | None = None) -> Trainer:
    """The trainer of one phase: head/whole-model training, or (``fine_tune``) the fine-tune phase that
    continues ``state`` (or the checkpoint's) with the last backbone blocks unfrozen."""
    config, model, dist = setup.config, setup.model, setup.dist
    ft = config.training.fine_tune
    if fine_tune:
        from plantpheno.training.fine_tune import unfreeze_last

        unfreeze_last(model, ft.blocks)
    phase_config = _fine_tune_config(config) if fine_tune else config
    loss_fn = build_loss(config, train_targets=setup.prepared.targets("train"), num_classes=setup.task.num_outputs)
    optimizer = build_optimizer(model, phase_config, world_size=dist.world_size)
    train_loader = setup.loaders["train"]
    train_loader.sampler.set_epoch(0)  # a whole epoch's length: a resumed epoch left the sampler part-way
    scheduler = build_scheduler(optimizer, phase_config, steps_per_epoch=len(train_loader))
    dtype = amp_dtype(config, setup.device)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=dtype == torch.float16)
    state = state or TrainState(world_size=dist.world_size)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = _resumed_state(checkpoint["state"], dist.world_size)
        restore_rng(checkpoint["rng"])  # last: building the model above consumed random numbers
    elif fine_tune:  # the phase starts here: its own count of epochs without improvement
        state.fine_tune_from, state.bad_epochs = state.epoch, 0
    patience = config.training.early_stopping
    builtin: list[object] = [EarlyStopping(patience=patience.patience, min_delta=patience.min_delta)]
    if dist.enabled:
        builtin.insert(0, ReplicaCheck(dist))
    if dist.is_main:  # only rank 0 writes files and prints
        builtin += [Checkpointer(run_dir / CHECKPOINTS, meta=setup.meta), MetricsLog(run_dir / METRICS_LOG),
                    Console(progress_bar=config.training.progress_bar)]
    loaders, net = setup.loaders, model
    if config.training.feature_cache:  # the trainer sees the part after the cache; checkpoints the whole model
        loaders, net = _cached_phase(setup, fine_tune=fine_tune)
    # inputs follow the model's format; a head on pooled (2-D) features has none
    channels_last = input_format(net) == torch.channels_last and not isinstance(net, CachedHead)
    epochs = config.training.epochs if not fine_tune else state.fine_tune_from + ft.epochs
    return Trainer(model=net, task=setup.task, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
                   step_scheduler_per_batch=steps_per_batch(phase_config), scaler=scaler, loaders=loaders,
                   device=setup.device, epochs=epochs, monitor=config.monitor, amp_dtype=dtype,
                   grad_clip_norm=config.training.grad_clip_norm, callbacks=[*builtin, *callbacks], state=state,
                   dist=dist, train_model=_training_module(net, setup),
                   channels_last=channels_last, checkpoint_model=model)


def _fine_tune_config(config: Config) -> Config:
    """The optimisation settings of the fine-tune phase: its epochs and learning rate, no warmup."""
    ft = config.training.fine_tune
    training = config.training.model_copy(update={"epochs": ft.epochs, "learning_rate": ft.learning_rate,
                                                  "warmup_epochs": 0.0})
    return config.model_copy(update={"training": training})


def _cached_phase(setup: _Setup, *, fine_tune: bool) -> tuple[dict[str, DataLoader], nn.Module]:
    """Loaders over cached backbone outputs and the module that trains on them.

    Without a fine-tune phase (or when the backbone is not a plain chain of modules) the cache holds
    pooled features and the head trains on them; the fine-tune phase then runs on images. With a
    fine-tune phase on a chain backbone, the cache holds the activations where the unfrozen blocks begin:
    the head phase pools its features from them, the fine-tune phase trains the blocks after the cut.
    """
    from plantpheno.training.features import cache_inputs, feature_loaders, loaders_over, map_cached
    from plantpheno.training.fine_tune import CutSuffix, Prefix, fine_tune_cut

    config, model = setup.config, setup.model
    ft = config.training.fine_tune
    kwargs = {"mean": setup.meta["mean"], "std": setup.meta["std"], "device": setup.device}
    if "trunk" not in setup.cached:  # found once (a probe pass), shared by both phases
        setup.cached["trunk"] = fine_tune_cut(model, ft.blocks, config.data.image_size) if ft.epochs else None
    found = setup.cached["trunk"]
    if found is None:
        if fine_tune:
            log.info("fine-tuning %s on images: its features are not a plain chain of modules to cut",
                     config.model.backbone)
            return setup.loaders, model
        return (feature_loaders(setup.prepared, setup.loaders, model, config, **kwargs),
                CachedHead(model, dropout=config.model.dropout))
    trunk, cut = found
    if "cut" not in setup.cached:  # activations at the cut: computed once, shared by both phases
        setup.cached["cut"] = cache_inputs(setup.prepared, setup.loaders, model, config, fn=Prefix(trunk[:cut]),
                                           **kwargs)
        mib = sum(t.numel() * t.element_size() for t in setup.cached["cut"].values()) / 2**20
        log.info("cached the frozen backbone's activations before module %d of %d: %.0f MiB", cut, len(trunk), mib)
    acts = setup.cached["cut"]
    suffix = CutSuffix(model, trunk[cut:])
    if fine_tune:
        return loaders_over(acts, setup.loaders, config), suffix
    pooled = map_cached(acts, lambda a: model.forward_head(suffix.forward_trunk(a), pre_logits=True), model,
                        device=setup.device)
    return loaders_over(pooled, setup.loaders, config), CachedHead(model, dropout=config.model.dropout)


def _training_module(model: nn.Module, setup: _Setup) -> nn.Module:
    """What the optimizer steps through: the model, in DDP when distributed, compiled if asked."""
    dist, config = setup.dist, setup.config
    module: nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        if config.distributed.sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        on_gpu = setup.device.type == "cuda"
        module = DistributedDataParallel(module, device_ids=[setup.device.index] if on_gpu else None)
    if config.training.compile:
        module = torch.compile(module)
    return module


def _resumed_state(saved: dict[str, Any], world_size: int) -> TrainState:
    """The saved loop state; a mid-epoch position is re-expressed for a different number of ranks."""
    state = TrainState(**{"world_size": 1, **saved})
    if state.world_size != world_size:
        state.batch = (state.batch * state.world_size) // world_size
        state.world_size = world_size
    return state


class ReplicaCheck:
    """At the end of training, compare every rank's parameters (before rank 0 restores the best weights)."""

    def __init__(self, dist: DistContext) -> None:
        self.dist = dist
        self.identical: bool | None = None

    def on_fit_end(self, trainer: Trainer) -> None:
        digests = self.dist.all_gather(distributed.parameters_digest(trainer.model))
        self.identical = len(set(digests)) == 1
        if not self.identical:
            raise TrainingError(f"model replicas diverged across ranks (parameter digests {digests}); "
                                f"this is a bug, please report it")


def _fit_and_evaluate(setup: _Setup, run_dir: Path, *, checkpoint: dict[str, Any] | None,
                      callbacks: Sequence[object], handle_signals: bool) -> RunResult:
    fine_tuning = checkpoint is not None and checkpoint["state"].get("fine_tune_from") is not None
    trainer = _build_trainer(setup, run_dir, checkpoint, callbacks, fine_tune=fine_tuning)
    name, _ = trainer.monitor
    if name.removeprefix("val/") not in trainer.validate_keys():
        raise TrainingError(f"training.monitor: got {name!r}; expected one of "
                            f"{', '.join('val/' + k for k in trainer.validate_keys())}")
    main = setup.dist.is_main
    trackers = (open_run_tracking(setup.config, run_dir, prepared=setup.prepared, task=setup.task,
                                  resuming=checkpoint is not None) if main else TrackerSet([]))
    tracking = TrackingCallback(trackers, system_interval=setup.config.tracking.system_metrics_interval if main else 0)
    trainer.callbacks.insert(0, tracking)  # before user callbacks: a pruned trial's last epoch is still tracked
    try:
        state = _fit(trainer, run_dir, handle_signals=handle_signals)
        if setup.config.training.fine_tune.epochs and trainer.state.fine_tune_from is None:
            # the phase starts from the best head, which rank 0 restored; the new DDP wrapper broadcasts
            # rank 0's parameters and buffers to the other ranks when it is built
            trainer = _build_trainer(setup, run_dir, None, callbacks, fine_tune=True, state=trainer.state)
            trainer.callbacks.insert(0, tracking)
            state = _fit(trainer, run_dir, handle_signals=handle_signals)
    except (Interrupted, EarlyExit) as exc:
        if isinstance(exc, EarlyExit) and main:
            write_status(run_dir, exc.status, reason=str(exc))
        trackers.finish("interrupted")
        raise
    except BaseException:
        trackers.finish("failed")
        raise
    finally:
        tracking.close()
    if not main:  # the other ranks are done: rank 0 evaluates, reports and registers
        return RunResult(run_dir, {}, state)
    if setup.dist.enabled:
        write_status(run_dir, "evaluating", distributed=_job_summary(setup, trainer))
    _plot_history(run_dir)
    split = setup.config.evaluation.split
    metrics = _evaluate(setup, run_dir, split=split, best_epoch=state.best_epoch)
    write_status(run_dir, "completed", epochs=state.epoch, best_epoch=state.best_epoch,
                 best_value=state.best_value, monitor=name, evaluation={split: _headline(metrics)})
    log_run_results(trackers, setup.config, run_dir, metrics, split=split, step=state.epoch)
    trackers.finish("completed")
    if setup.config.registry.name:
        _register(setup.config, run_dir)
    return RunResult(run_dir, metrics, state)


def _register(config: Config, run_dir: Path) -> None:
    """Auto-registration; a failure here does not undo a completed run, so it warns with the manual command."""
    from plantpheno.registry.store import ModelRegistry, run_registry_uri

    reg = config.registry
    uri = run_registry_uri(config)
    try:
        info = ModelRegistry(uri).register(run_dir, name=reg.name, alias=reg.alias)
    except Exception as exc:  # noqa: BLE001 - the trained run stays valid whatever the registry does
        print(f"plantpheno: warning: registering {reg.name} failed ({type(exc).__name__}: {exc}); retry with: "
              f"plantpheno models register {run_dir} --name {reg.name} --registry {uri}", file=sys.stderr)
        return
    write_status(run_dir, "completed", registered={"name": info.name, "version": info.version, "uri": uri})
    print(f"registered {info.name} version {info.version} in {uri}", file=sys.stderr)


def _job_summary(setup: _Setup, trainer: Trainer) -> dict[str, Any]:
    """Effective batch size and learning rate of a distributed run, and whether replicas stayed identical."""
    from plantpheno.training.optim import effective_lr

    check = next((cb for cb in trainer.callbacks if isinstance(cb, ReplicaCheck)), None)
    dist, config = setup.dist, setup.config
    return {"world_size": dist.world_size, "backend": dist.backend,
            "per_rank_batch_size": config.data.batch_size,
            "global_batch_size": config.data.batch_size * dist.world_size,
            "learning_rate": effective_lr(config, dist.world_size), "scale_lr": config.distributed.scale_lr,
            "replicas_identical": check.identical if check else None}


def _fit(trainer: Trainer, run_dir: Path, *, handle_signals: bool) -> TrainState:
    main = trainer.dist.is_main
    if main:
        write_status(run_dir, "running")
    try:
        use_signals = handle_signals and threading.current_thread() is threading.main_thread()
        with _stop_on_signals(trainer) if use_signals else contextlib.nullcontext():
            return trainer.fit()
    except Interrupted as exc:
        exc.run_dir = run_dir
        if main:
            write_status(run_dir, "interrupted", epoch=exc.state.epoch, batch=exc.state.batch, reason=exc.reason)
        raise
    except NonFiniteLossError as exc:
        if main:
            write_status(run_dir, "failed", reason=str(exc))
        last = run_dir / CHECKPOINTS / LAST
        kept = f"the last good checkpoint is {last} (epoch {exc.epoch - 1})" if last.is_file() else "no epoch had completed"
        raise TrainingError(f"{exc}; training stopped and {kept}. Lower training.learning_rate "
                            f"or set training.grad_clip_norm.") from None


def _plot_history(run_dir: Path) -> None:
    lines = (run_dir / METRICS_LOG).read_text(encoding="utf-8").splitlines()
    history = [{k: v for k, v in json.loads(line).items() if k == "epoch" or k.startswith(("train/", "val/"))}
               for line in lines]
    plot_training_curves(history, run_dir / "training_curves.png")


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    key = metrics["headline_metric"]
    return {key: metrics[key], "confidence_interval": metrics.get("confidence_interval")}


def _evaluate(setup: _Setup, run_dir: Path, *, split: str, best_epoch: int | None) -> dict[str, Any]:
    p = predict(setup.model, setup.loaders[split], task=setup.task, device=setup.device,
                amp_dtype=amp_dtype(setup.config, setup.device))
    ev = setup.config.evaluation
    return write_evaluation(
        run_dir / EVAL_DIR / split, targets=p.targets, outputs=p.outputs,
        paths=[s.path for s in setup.prepared.splits[split]], class_names=setup.prepared.class_names,
        bootstrap_samples=ev.bootstrap_samples, confidence=ev.confidence, seed=setup.config.seed,
        extra={"split": split, "num_images": len(p.targets), "checkpoint_epoch": best_epoch},
    )


def evaluate_run(run_dir: Path, *, split: str = "test", device: str | None = None) -> dict[str, Any]:
    """Evaluate a run's best checkpoint (or its last, if no best exists) on one of its splits."""
    config = read_run_config(run_dir)
    if device is not None:
        config = validate_config({**config_to_dict(config), "device": device}, source="--device")
    ckpt_dir = run_dir / CHECKPOINTS
    path = ckpt_dir / BEST if (ckpt_dir / BEST).is_file() else ckpt_dir / LAST
    if not path.is_file():
        raise RunDirError(f"{run_dir} has no checkpoint yet ({ckpt_dir / BEST} and {ckpt_dir / LAST} are missing)")
    checkpoint = load_checkpoint(path)
    set_threads(config.training.threads)
    setup = _setup(config, manifest=run_dir / SPLIT_MANIFEST, load_pretrained=False, splits=(split,))
    try:
        _check_same_data(run_dir, setup.prepared)
        setup.model.load_state_dict(checkpoint["model"])
        return _evaluate(setup, run_dir, split=split, best_epoch=checkpoint["state"]["epoch"])
    finally:
        close_loaders(setup.loaders)


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM: finish the current batch, save ``last``, stop. A second SIGINT stops at once."""

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_requested = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

"""Benchmark: images/s of the training data pipeline alone (no model), with and without ``data.cache``.

For each image size it iterates the training DataLoader for a few epochs with

* ``imagefolder``: ``torchvision.datasets.ImageFolder`` + PIL decoding + the same train transform,
  on the same training images (the classic baseline);
* plantpheno's loader with ``data.cache`` = ``none``, ``memory``, ``disk`` (first run: it builds the
  cache) and ``disk-reused`` (a second run mapping that cache);
* ``memory-per-sample``: the memory cache with ``data.augment.batched: false`` (torchvision's
  per-image transforms; the other plantpheno rows augment whole batches);
* ``memory-noaug``: the memory cache with augmentation off: each image goes through the evaluation
  transforms one at a time (torchvision's centre crop, ``ToTensor`` and ``Normalize``). Since uint8
  batches and per-chunk resampling, the batched augmentations deliver more images/s than this.

It reports the setup time (building the loaders, which fills a cache), images/s of epoch 1 and of
the later epochs (their median; wall clock, and per CPU second of the main process + workers: steadier on a
shared machine), and the peak resident memory (main process + workers, summed; shared pages are
counted once per process that touched them) per epoch, and the proportional set size at each epoch's
end (PSS: shared pages split among the processes; the memory really held). Results go to
``benchmarks/results/data_pipeline.{json,md}``.

    .venv/bin/python benchmarks/data_pipeline.py [--sizes 128 224] [--epochs 5] [--workers 2]
    .venv/bin/python benchmarks/data_pipeline.py --enlarge 1536 --limit 400 --sizes 224   # camera-sized photos
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil
import torch
from machine import describe, machine  # benchmarks/ is not a package; records the machine

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "plantvillage-subset"
RESULTS = REPO / "benchmarks" / "results"
PIPELINES = ("imagefolder", "none", "memory", "disk", "disk-reused", "memory-per-sample", "memory-noaug")


class ProcessMeter:
    """Samples this process and its children in a thread: peak summed RSS, and CPU seconds used.

    ``take()`` returns (peak RSS, summed PSS now, CPU seconds) since the previous call. CPU time is what the
    work cost whatever else runs on the machine, so it is the steadier figure on a shared machine. RSS counts
    a shared page once per process that touched it: with a memory cache it grows while each worker first
    reads cached images it had not read yet. PSS splits each shared page among the processes mapping it, so
    the sum is the memory the job really holds: the figure for "memory stays flat". It is read only when an
    epoch ends (the workers persist): reading it every 50 ms cost the pipeline a quarter of its speed.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._cpu: dict[int, float] = {}  # last CPU seconds seen per process (workers exit later)
        self._cpu_taken = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sample()
        self._cpu_taken = sum(self._cpu.values())
        self._thread.start()

    def _sample(self) -> None:
        me = psutil.Process()
        total = 0
        for proc in (me, *me.children(recursive=True)):
            try:
                with proc.oneshot():
                    total += proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:
                continue
            with self._lock:
                self._cpu[proc.pid] = times.user + times.system
        self.peak = max(self.peak, total)

    @staticmethod
    def pss() -> int:
        me, total = psutil.Process(), 0
        for proc in (me, *me.children(recursive=True)):
            try:
                total += proc.memory_full_info().pss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def take(self) -> tuple[int, int, float]:
        self._sample()
        with self._lock:
            cpu_now = sum(self._cpu.values())
        peak, self.peak = self.peak, 0
        cpu, self._cpu_taken = cpu_now - self._cpu_taken, cpu_now
        return peak, self.pss(), cpu

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _config(data_root: Path, output_dir: Path, *, size: int, batch: int, workers: int, cache: str,
            augment: bool = True, batched: bool = True):
    from plantpheno.config import validate_config

    return validate_config({
        "output_dir": str(output_dir), "device": "cpu",
        "data": {"root": str(data_root), "image_size": size, "batch_size": batch, "num_workers": workers,
                 "cache": cache, "augment": {"enabled": augment, "batched": batched}},
        "model": {"backbone": "tf_efficientnet_lite0"},
    })


def _imagefolder_loader(config, train_paths: set[str]) -> torch.utils.data.DataLoader:
    from torchvision.datasets import ImageFolder

    from plantpheno.data.transforms import train_transform

    data = config.data
    transform = train_transform(data.image_size, (0.5,) * 3, (0.5,) * 3, data.augment)
    dataset = ImageFolder(str(data.root), transform=transform, is_valid_file=lambda p: str(Path(p)) in train_paths)
    return torch.utils.data.DataLoader(dataset, batch_size=data.batch_size, shuffle=True, drop_last=True,
                                       num_workers=data.num_workers, persistent_workers=data.num_workers > 0,
                                       generator=torch.Generator().manual_seed(0))


def _epochs(loader: torch.utils.data.DataLoader, epochs: int, meter: ProcessMeter,
            set_epoch: bool, finish) -> list[dict[str, float]]:
    main_device = torch.device("cpu")
    rows = []
    for epoch in range(1, epochs + 1):
        if set_epoch:
            loader.sampler.set_epoch(epoch)
        start, count = time.perf_counter(), 0
        for images, _ in loader:
            # as the trainer receives them: normalised float (batched augmentation sends uint8 from its workers)
            count += len(finish(images, main_device))
        wall = time.perf_counter() - start
        peak, pss, cpu = meter.take()
        rows.append({"img_s": count / wall, "img_per_cpu_s": count / cpu, "rss_mib": peak / 2**20,
                     "pss_mib": pss / 2**20})
    return rows


def run_one(pipeline: str, prepared, data_root: Path, cache_dir: Path, *, size: int, batch: int, workers: int,
            epochs: int) -> dict[str, Any]:
    """Build one pipeline's train loader and time its epochs."""
    from plantpheno.data.batch_augment import BatchFinish
    from plantpheno.data.datasets import build_loaders, close_loaders

    cache = {"none": "none", "imagefolder": "none"}.get(pipeline, pipeline.split("-")[0])
    config = _config(data_root, cache_dir, size=size, batch=batch, workers=workers, cache=cache,
                     augment=pipeline != "memory-noaug", batched=pipeline != "memory-per-sample")
    meter = ProcessMeter()
    start = time.perf_counter()
    if pipeline == "imagefolder":
        loader = _imagefolder_loader(config, {str(s.path) for s in prepared.splits["train"]})
        finish = BatchFinish()
    else:
        loaders = build_loaders(prepared, config.data, seed=config.seed, output_dir=config.output_dir, 
                                mean=(0.5,) * 3, std=(0.5,) * 3)
        loader, finish = loaders["train"], loaders.finish
    build_s = time.perf_counter() - start
    meter.take()
    rows = _epochs(loader, epochs, meter, set_epoch=pipeline != "imagefolder", finish=finish)
    meter.close()
    # stop the workers now: left to the garbage collector they linger into the next pipeline's figures
    close_loaders({"train": loader})
    del loader

    def later(key: str) -> float | None:  # the median: a burst from another job on the machine moves it least
        return round(statistics.median(r[key] for r in rows[1:]), 1) if len(rows) > 1 else None

    return {"image_size": size, "pipeline": pipeline, "build_s": round(build_s, 2),
            "epoch1_img_s": round(rows[0]["img_s"], 1), "later_img_s": later("img_s"),
            "epoch1_img_per_cpu_s": round(rows[0]["img_per_cpu_s"], 1), "later_img_per_cpu_s": later("img_per_cpu_s"),
            "img_s_per_epoch": [round(r["img_s"], 1) for r in rows],
            "peak_rss_mib_per_epoch": [round(r["rss_mib"]) for r in rows],
            "pss_mib_per_epoch": [round(r["pss_mib"]) for r in rows]}


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """A table; speed-ups = epochs 2+ over the ImageFolder baseline's at that size (wall, and per CPU second)."""
    base = {r["image_size"]: r for r in results if r["pipeline"] == "imagefolder"}
    lines = [f"# Data pipeline benchmark ({meta['date']})", "",
             f"{meta['machine']}; {meta['settings']}. {meta['note']}", "",
             ("| size | pipeline | setup s | epoch 1 img/s | epochs 2+ img/s | vs ImageFolder | "
             "epochs 2+ img/CPU-s | vs ImageFolder (CPU) | PSS MiB at each epoch's end | peak RSS MiB/epoch |"),
             "|---|---|---|---|---|---|---|---|---|---|"]

    def ratio(r: dict[str, Any], key: str) -> str:
        ref = base.get(r["image_size"], {}).get(key)
        return f"{r[key] / ref:.2f}x" if ref and r[key] else "-"

    for r in results:
        lines.append(f"| {r['image_size']} | {r['pipeline']} | {r['build_s']} | {r['epoch1_img_s']} | "
                     f"{r['later_img_s']} | {ratio(r, 'later_img_s')} | {r['later_img_per_cpu_s']} | "
                     f"{ratio(r, 'later_img_per_cpu_s')} | {' / '.join(map(str, r['pss_mib_per_epoch']))} | "
                     f"{' / '.join(map(str, r['peak_rss_mib_per_epoch']))} |")
    return "\n".join(lines) + "\n"


def enlarged_copy(source: Path, dest: Path, *, side: int, limit: int) -> Path:
    """Every k-th image of ``source`` (``limit`` in all, classes kept) enlarged to ``side`` px, as JPEG q90.

    Stands in for camera photos of plants, whose decoding costs far more than a 256 px JPEG's.
    """
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    files = sorted(p for p in source.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    chosen = files[:: max(1, len(files) // limit)][:limit]

    def write(path: Path) -> None:
        out = dest / path.parent.name / (path.stem + ".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as img:
            img.convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(out, quality=90)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(write, chosen))
    return dest


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--enlarge", type=int, default=0, metavar="PX",
                        help="run on copies of the images enlarged to PX px (camera-photo decoding cost)")
    parser.add_argument("--limit", type=int, default=400, help="with --enlarge: how many images to copy")
    parser.add_argument("--main-threads", type=int, default=1,
                        help="torch threads of the main process, which only turns batches into normalised float")
    args = parser.parse_args(list(argv) if argv is not None else None)
    # Here the main process runs no model: with a pool of 2 threads, the pool spins after each of its small
    # conversion ops and takes the cores the workers need (measured: 0.52 CPU-s an epoch instead of 0.11, and
    # 2600 instead of 4500 images/s at 128 px). In training, the model's own ops keep those threads busy anyway.
    torch.set_num_threads(args.main_threads)
    if not args.data.is_dir():
        print(f"skipped: {args.data} does not exist (the PlantVillage subset lives in ../shared/data)")
        return 0
    from plantpheno.data.prepared import prepare_data

    info = machine()  # before the runs: its load average is the machine's, not this benchmark's
    load = (info.get("load_average_1_5_15_min") or [None])[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="plantpheno-bench-") as tmp:
        data = args.data
        if args.enlarge:
            data = enlarged_copy(args.data, Path(tmp) / "enlarged", side=args.enlarge, limit=args.limit)
        prepared = prepare_data(_config(data, Path(tmp), size=args.sizes[0], batch=args.batch_size,
                                        workers=args.workers, cache="none"))
        for size in args.sizes:
            for pipeline in args.pipelines:
                row = run_one(pipeline, prepared, data, Path(tmp), size=size, batch=args.batch_size,
                              workers=args.workers, epochs=args.epochs)
                print(json.dumps(row), flush=True)
                results.append(row)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": describe(info),
        "machine_record": info,
        "settings": f"{len(prepared.splits['train'])} training images of {args.data.name}"
                    f"{f' enlarged to {args.enlarge} px' if args.enlarge else ''}, batch {args.batch_size}, "
                    f"{args.workers} workers, {args.epochs} epochs, default augmentation, "
                    f"{args.main_threads} torch thread(s) in the main process",
        # the machine line above states the load when it started
        "note": ("A quiet machine when it started." if load is not None and load <= 0.5 else
                 "Other work was running or had just ended when it started: treat ratios as indicative."),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"data_pipeline_enlarged{args.enlarge}" if args.enlarge else "data_pipeline"
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    table = markdown(results, meta)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

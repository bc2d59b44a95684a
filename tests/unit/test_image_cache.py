"""``data.cache``: decoded, resized uint8 pixels kept in memory or in a memory-mapped file."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from plantpheno import pipeline
from plantpheno.data import cache as cache_module
from plantpheno.data.cache import CACHE_DIR, CacheSpec, build_image_cache, cache_spec, decode_resized, shared_buffer
from plantpheno.data.datasets import build_loaders
from plantpheno.data.prepared import prepare_data
from plantpheno.data.images import load_rgb
from plantpheno.data.transforms import eval_transform

ORIENTATION = 0x0112


@pytest.fixture
def odd_images(tmp_path: Path) -> list[Path]:
    """Non-square, EXIF-rotated, grayscale, RGBA and tiny images: everything the resize must get right."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "odd"
    folder.mkdir()

    def noise(h: int, w: int, c: int = 3) -> np.ndarray:
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)

    Image.fromarray(noise(30, 70)).save(folder / "wide.png")
    Image.fromarray(noise(90, 41)).save(folder / "tall.jpg", quality=90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored 64x40, displayed 40x64
    Image.fromarray(noise(40, 64)).save(folder / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(noise(50, 50, 1)[..., 0], mode="L").save(folder / "gray.png")
    Image.fromarray(noise(45, 60, 4), mode="RGBA").save(folder / "alpha.png")
    Image.fromarray(noise(12, 20)).save(folder / "tiny.png")
    return sorted(folder.iterdir())


@pytest.mark.parametrize("mode", ["memory", "disk"])
@pytest.mark.parametrize("spec", [CacheSpec(32), CacheSpec(37)], ids=["eval", "train"])
def test_cache_holds_exactly_a_fresh_decode_and_resize(odd_images, tmp_path, mode, spec) -> None:
    cache = build_image_cache(odd_images, spec, mode=mode, fingerprint="f", directory=tmp_path / "c", workers=2)
    assert len(cache) == len(odd_images)
    for i, path in enumerate(odd_images):
        image = load_rgb(path)
        short = min(image.size)
        fresh = T.Resize(spec.side, antialias=True)(image)  # larger and smaller images alike
        assert min(fresh.size) == spec.side and short != spec.side
        assert np.array_equal(cache.array(i), np.asarray(fresh)), path.name
        assert np.array_equal(np.asarray(cache.image(i)), np.asarray(fresh)), path.name
        if spec.side == 32:  # the eval cache: the whole evaluation transform gives the same tensor
            evaluate = eval_transform(spec.side, (0.5,) * 3, (0.5,) * 3)
            assert torch.equal(evaluate(cache.image(i)), evaluate(image)), path.name
    again = pickle.loads(pickle.dumps(cache))  # what a spawned DataLoader worker receives
    assert all(np.array_equal(again.array(i), cache.array(i)) for i in range(len(cache)))


def _loaders(config):
    prepared = prepare_data(config)
    return build_loaders(prepared, config.data, seed=config.seed, output_dir=config.output_dir, mean=(0.5,) * 3,
                         std=(0.5,) * 3)


def _batches(loader) -> list[torch.Tensor]:
    loader.sampler.set_epoch(1)
    return [images for images, _ in loader]


def test_evaluation_pixels_are_identical_with_and_without_cache(make_config, disease_root) -> None:
    plain = _loaders(make_config(data={"root": str(disease_root), "image_size": 40}))
    cached = _loaders(make_config(data={"root": str(disease_root), "image_size": 40, "cache": "memory"}))
    assert plain["val"].dataset.cache is None and cached["val"].dataset.cache is not None
    for split in ("val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(_batches(plain[split]), _batches(cached[split]), strict=True))
    # training augmentations still draw from each sample's seed: same seeds, same crops of the cached pixels
    assert all(torch.equal(a, b) for a, b in zip(_batches(cached["train"]), _batches(cached["train"]), strict=True))
    assert cached["train"].dataset.cache.shapes[0].tolist() == [46, 46]  # ceil(1.15 * 40), from 48 px


def test_training_without_augmentation_sees_the_same_pixels_as_uncached(make_config, disease_root) -> None:
    no_crop = make_config(data={"root": str(disease_root), "image_size": 40, "augment": {"crop_scale": [1, 1]}})
    assert cache_spec(no_crop.data, train=True) == CacheSpec(40)  # no margin without random crops
    data = {"root": str(disease_root), "image_size": 40, "augment": {"enabled": False}}
    plain = _loaders(make_config(data=data))
    cached = _loaders(make_config(data={**data, "cache": "disk"}))
    assert all(torch.equal(a, b) for a, b in zip(_batches(plain["train"]), _batches(cached["train"]), strict=True))


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_worker_processes_read_the_cache_and_draw_the_same_augmentations(make_config, disease_root, mode) -> None:
    data = {"root": str(disease_root), "cache": mode}
    in_process = _loaders(make_config(data=data))["train"]
    workers = _loaders(make_config(data={**data, "num_workers": 2}))["train"]
    assert all(torch.equal(a, b) for a, b in zip(_batches(in_process), _batches(workers), strict=True))


@pytest.fixture
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every image the cache decodes (the real function still does the work)."""
    calls: list[Path] = []

    def counted(path: Path, spec: CacheSpec) -> np.ndarray:
        calls.append(path)
        return decode_resized(path, spec)

    monkeypatch.setattr(cache_module, "decode_resized", counted)
    return calls


def test_disk_cache_is_reused_and_invalidated_by_changed_images_or_size(make_config, disease_root, tmp_path,
                                                                       decode_counter) -> None:
    root = tmp_path / "leaves"
    shutil.copytree(disease_root, root)
    data = {"root": str(root), "cache": "disk"}
    _loaders(make_config(data=data))
    assert len(decode_counter) == 64
    cache_dir = tmp_path / "runs" / CACHE_DIR
    assert len(list(cache_dir.glob("*.u8"))) == len(list(cache_dir.glob("*.json"))) == 3  # train, val, test

    decode_counter.clear()
    loaders = _loaders(make_config(data=data))
    assert decode_counter == []  # a second run maps the cache, decodes nothing
    assert next(iter(loaders["val"]))[0].shape[-1] == 32

    one = min(root.glob("rust/*.jpg"))
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(one)  # same name, new pixels
    _loaders(make_config(data=data))
    assert len(decode_counter) == 64  # the fingerprint changed: every split is rebuilt

    decode_counter.clear()
    _loaders(make_config(data={**data, "image_size": 36}))
    assert len(decode_counter) == 64


def test_a_half_written_disk_cache_is_never_used(make_config, disease_root, decode_counter, tmp_path) -> None:
    config = make_config(data={"root": str(disease_root), "cache": "disk"})
    _loaders(config)
    cache_dir = tmp_path / "runs" / CACHE_DIR
    for index in cache_dir.glob("*.json"):  # as if the run died between the pixels and their index
        index.unlink()
    data_file = min(cache_dir.glob("*.u8"))
    data_file.write_bytes(data_file.read_bytes()[:100])  # and one pixel file cut short
    decode_counter.clear()
    _loaders(config)
    assert len(decode_counter) == 64
    assert not list(cache_dir.glob(".*.tmp"))  # no temporary files left behind


class RssPerEpoch:
    """Trainer callback: resident memory of this process after every epoch."""

    def __init__(self) -> None:
        self.rss: list[int] = []

    def on_epoch_end(self, trainer, metrics) -> None:
        self.rss.append(psutil.Process().memory_info().rss)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_training_with_a_cache_completes_and_memory_stays_flat(make_config, disease_root, mode) -> None:
    epochs = 5 if mode == "memory" else 2
    config = make_config(data={"root": str(disease_root), "cache": mode},
                         training={"epochs": epochs, "scheduler": "none"})
    probe = RssPerEpoch()
    result = pipeline.train(config, callbacks=[probe])
    assert (result.run_dir / "eval/test/metrics.json").is_file()
    assert len(probe.rss) == epochs
    growth = max(probe.rss[1:]) - probe.rss[1]
    assert growth < 40 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB after epoch 2: {probe.rss}"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked DataLoader workers are a POSIX thing")
def test_memory_cache_pages_are_shared_with_forked_workers_not_copied() -> None:
    # MAP_SHARED: a forked worker maps the very pages of the parent (a private array would be copy-on-write,
    # and khugepaged copies such pages into each worker's own huge pages over time)
    pixels = shared_buffer(1 << 20)
    pixels[:] = 7
    pid = os.fork()
    if pid == 0:  # the child writes; only shared pages carry that back to the parent
        pixels[123] = 42
        os._exit(0)
    os.waitpid(pid, 0)
    assert pixels[123] == 42 and pixels[124] == 7
    assert shared_buffer(0).size == 0

"""What several hostile modules share: one tiny trained model, packaged and saved as an MLflow pyfunc model,
trained once per test session (a few seconds of CPU). A module uses it as a fixture::

    from tiny_model import tiny_model  # noqa: F401 (a fixture)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class TinyModel:
    """A trained run, its model package and its MLflow pyfunc model folder (tests copy before changing them)."""

    run: Path
    package: Path
    pyfunc: Path
    images: list[Path]  # a few of the images it was trained on


_BUILT: list[TinyModel] = []  # one per session, whichever module asks first


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, disease_root: Path) -> TinyModel:
    if not _BUILT:
        _BUILT.append(_build(tmp_path_factory, disease_root))
    return _BUILT[0]


def _build(tmp_path_factory: pytest.TempPathFactory, disease_root: Path) -> TinyModel:
    import plantpheno as pp
    from conftest import tiny_config
    from plantpheno.registry.package import package_run
    from plantpheno.registry.pyfunc import save_pyfunc_model

    tmp = tmp_path_factory.mktemp("tiny-model")
    raw = tiny_config(tmp, data={"root": str(disease_root), "checks": {"enabled": False}},
                      training={"epochs": 1}, evaluation={"bootstrap_samples": 20},
                      tracking={"system_metrics_interval": 0})
    run = pp.train(raw, verbose=False)
    package = package_run(run.path, tmp / "package")
    save_pyfunc_model(package, tmp / "pyfunc")
    images = sorted(disease_root.rglob("*.jpg"))[:3]
    return TinyModel(run.path, package.folder, tmp / "pyfunc", images)

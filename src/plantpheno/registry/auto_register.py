"""Registration at the end of training (``registry.name`` in the config): in the registry every command uses
(:func:`plantpheno.registry.location.locate_registry`)."""

from __future__ import annotations

from plantpheno.config import RegistryConfig
from plantpheno.reporting import Reporter
from plantpheno.run.folder import RunDir


def register_trained_run(reg: RegistryConfig, run: RunDir, reporter: Reporter) -> None:
    """Register the finished ``run`` as its config's ``registry`` section says; a failure here does not undo a
    completed run, so it warns with the manual command."""
    from plantpheno.registry.location import locate_registry
    from plantpheno.registry.store import ModelRegistry

    location = locate_registry(run_uri=reg.uri)
    try:
        info = ModelRegistry(location.uri).register(run.path, name=reg.name, alias=reg.alias, force=reg.force)
    except Exception as exc:  # noqa: BLE001 - the trained run stays valid whatever the registry does
        reporter.warning(f"registering {reg.name} failed ({type(exc).__name__}: {exc}); retry with: "
                         f"plantpheno models register {run.path} --name {reg.name} --registry {location.uri}")
        return
    run.write_status("completed", registered={"name": info.name, "version": info.version, "uri": location.uri})
    reporter.info(f"registered {info.name} version {info.version} in {location.uri} ({location.source})")

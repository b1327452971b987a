"""Where the app's configs come from: the shipped ones (``modelfactory/conf``, package data, read by Hydra
as ``pkg://modelfactory.conf``) with the user's own config dir layered over them.

The user's dir is ``--config-dir`` when given, else ``./conf`` when the current directory has one. It is
searched first, as Hydra's own ``--config-dir`` is: ``model=my_model`` finds the user's
``conf/model/my_model.yaml``, ``model=openai_gpt4o`` still finds ours, and a file of the same name (or a
``config.yaml``) in the user's dir wins. ``modelfactory run`` (Hydra's search path) and ``list``/``check``/
``serve``/``estimate`` (:meth:`ConfigDirs.compose`) see the same configs in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SHIPPED", "ConfigDirs", "auto_user_dir", "project_root", "shipped_dir"]

SHIPPED = "pkg://modelfactory.conf"  # Hydra's name for the shipped configs (the primary config dir)
JOB_NAME = "run"  # hydra.job.name: the job log is run.log, as it was under `python run.py`


def shipped_dir() -> Path:
    """The shipped configs on disk (inside the installed package, or the clone's ``modelfactory/``)."""
    return Path(__file__).resolve().parent / "conf"


def _groups() -> set[str]:
    return {p.name for p in shipped_dir().iterdir() if p.is_dir() and not p.name.startswith("_")}


def auto_user_dir(cwd: Path | None = None) -> Path | None:
    """``./conf`` when it looks like a config dir (a ``config.yaml``, or a folder named like one of our
    groups: ``model/``, ``task/``, ...); else None. Never the shipped dir itself."""
    here = (cwd or Path.cwd()) / "conf"
    if not here.is_dir() or here.resolve() == shipped_dir():
        return None
    if (here / "config.yaml").is_file() or any((here / g).is_dir() for g in _groups()):
        return here
    return None


def project_root() -> Path | None:
    """The clone's root when modelfactory runs from a clone (``run.py`` beside the package), else None:
    a second place for relative dataset paths (``examples/dataset.jsonl``) and for the project's own
    modules (``examples.custom_model``), as ``python run.py`` always had."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "run.py").is_file() and (root / "modelfactory").is_dir() else None


@dataclass(frozen=True)
class ConfigDirs:
    """The user's config dir (or none) over the shipped one."""

    user: Path | None = None

    @classmethod
    def find(cls, explicit: Path | None = None) -> ConfigDirs:
        """``--config-dir`` when given, else ``./conf`` when there is one."""
        return cls(explicit if explicit is not None else auto_user_dir())

    @property
    def dirs(self) -> list[Path]:
        """Searched in this order: the user's first."""
        shipped = shipped_dir()
        if self.user is None or self.user.resolve() == shipped:
            return [shipped]
        return [self.user, shipped]

    def names(self, group: str) -> list[str]:
        """Every option of a config group, from both dirs."""
        return sorted({p.stem for d in self.dirs for p in (d / group).glob("*.yaml")})

    def file(self, group: str, name: str) -> Path | None:
        """The file Hydra would load for ``group=name`` (the user's first)."""
        return next((p for d in self.dirs if (p := d / group / f"{name}.yaml").is_file()), None)

    def hydra_args(self) -> list[str]:
        """What gives Hydra's command line the same search path: the user's dir as ``--config-dir``."""
        return [] if len(self.dirs) == 1 else [f"--config-dir={self.dirs[0].resolve()}"]

    @contextmanager
    def initialized(self) -> Iterator[None]:
        """Hydra initialized with the search path ``modelfactory run`` has (Hydra's compose API has no
        way to put a dir before the primary one, which ``initialize_config_dir`` would need)."""
        from hydra import version
        from hydra._internal.hydra import Hydra
        from hydra._internal.utils import create_config_search_path
        from hydra.initialize import get_gh_backup, restore_gh_from_backup

        from .job.spec import register_configs

        register_configs()  # conf/config.yaml starts from the job spec's defaults (job_spec)
        backup = get_gh_backup()
        version.setbase("1.3")
        search_path = create_config_search_path(SHIPPED)
        if len(self.dirs) > 1:  # as Hydra's own --config-dir does it (hydra/_internal/utils.py)
            search_path.prepend(provider="command-line", path=f"file://{self.dirs[0].resolve()}")
        try:
            Hydra.create_main_hydra2(task_name=JOB_NAME, config_search_path=search_path)
            yield
        finally:
            restore_gh_from_backup(backup)

    def compose(self, overrides: list[str], *, return_hydra_config: bool = False) -> Any:
        """The app's config (``config.yaml``) with ``overrides``, as ``modelfactory run`` composes it."""
        from hydra import compose

        with self.initialized():
            return compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)


@dataclass(frozen=True)
class ComposeOnce(ConfigDirs):
    """ConfigDirs that composes each set of overrides once and hands out the same read-only config:
    ``modelfactory check`` reads every config three times (problems, capability notes, backend notes);
    composing each once took the check of the 18 shipped configs from 55 Hydra compositions (~0.2 s
    each) to 19."""

    composed: dict[tuple[str, ...], Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def over(cls, configs: ConfigDirs) -> ComposeOnce:
        return cls(configs.user)

    def compose(self, overrides: list[str], *, return_hydra_config: bool = False) -> Any:
        if return_hydra_config:
            return super().compose(overrides, return_hydra_config=True)
        key = tuple(overrides)
        if key not in self.composed:
            from omegaconf import OmegaConf

            cfg = super().compose(overrides)
            OmegaConf.set_readonly(cfg, True)  # shared by its readers: a write fails loudly, never leaks
            self.composed[key] = cfg
        return self.composed[key]

"""``modelfactory run [overrides]``: the app. Hydra composes the config (the shipped ``modelfactory/conf``
with the user's config dir over it, :mod:`modelfactory._config_dirs`), :func:`modelfactory.job.app.run_job`
runs the job.

The task function (:func:`run_task`) is a plain module-level function of the installed package, so a
launcher that pickles it (submitit) or ships it to another process (joblib, Ray) imports it by name.
``python run.py`` in a clone is a shim over :func:`run_cli`.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ._config_dirs import SHIPPED, ConfigDirs, project_root
from ._envfile import load_dotenv
from ._overrides import mask_job_config, refusal_message, scrub_saved_config, secret_overrides
from .errors import ConfigError
from .job.spec import empty_dir_overrides, register_configs

__all__ = ["PROG", "completion_script", "main", "primary_score", "run_cli", "run_task"]

log = logging.getLogger("modelfactory.run")
PROG = "modelfactory run"  # how the help and Hydra's flags name the app when run as the console script
EXIT_CONFIG = 2  # a config error, Hydra's own included (the README's exit codes)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
_FULL_ERROR = "MODELFACTORY_FULL_ERROR"
register_configs()  # conf/config.yaml starts from the job spec's defaults (job_spec)
_jobs_started = 0  # a Hydra failure before any job ran is a config error (exit 2), not a job's (exit 1)
_frozen_at_exit = False


def _scrub_saved_configs(hc: Any) -> None:
    """Mask keys written literally in config files out of what Hydra saved for this run (and the sweep)."""
    try:
        if scrub_saved_config(Path(hc.runtime.output_dir) / ".hydra" / "config.yaml"):
            print(
                "warning: a key is written literally in a config file; it was masked in this run's "
                ".hydra/config.yaml. Prefer ${oc.env:VAR} in config files.",
                file=sys.stderr,
            )
        # a value a config file gives hydra.job.env_set (GEN_CRED: K) is a credential whatever its name
        scrub_saved_config(Path(hc.runtime.output_dir) / ".hydra" / "hydra.yaml")
        if hc.mode == RunMode.MULTIRUN:
            scrub_saved_config(Path(hc.sweep.dir) / "multirun.yaml")
    except Exception as exc:  # never let the scrubbing itself fail a job
        log.warning("could not check the saved config for literal keys: %s", exc)


def _skip_the_collections_at_exit() -> None:
    """Freeze the garbage collector's objects at this process's exit (``gc.freeze`` in an atexit hook).

    Why: CPython's finalization runs full collections over every object still alive, several times;
    after MLflow's imports (pandas, SQLAlchemy, FastAPI...: ~300k objects) that is 0.7-2 s of CPU at the
    end of each process that ran a job (run.py, each joblib or submitit worker), all of it after the
    results, the job record and the tracker's run were written. Frozen objects are only left out of
    those collections: every atexit hook still runs (the trackers' and logging's flushes included),
    refcounting still frees what it frees; what is lost is a finalizer on garbage in a reference cycle
    at exit, which CPython does not promise anyway."""
    global _frozen_at_exit
    if not _frozen_at_exit:
        atexit.register(gc.freeze)
        _frozen_at_exit = True


def _importable_here() -> None:
    """A job in another process (submitit, Ray) imports the user's own modules (a CallableModel's fn)
    from where it runs, and a clone's (``examples.custom_model``), as ``python run.py`` always could."""
    for path in (project_root(), Path.cwd()):
        if path is not None and str(path) not in sys.path:
            sys.path.insert(0, str(path))


def run_task(cfg: DictConfig) -> int:
    """One job under Hydra: scrub what Hydra saved, then :func:`modelfactory.job.app.run_job`."""
    from .job.app import run_job

    load_dotenv()  # a job in a process of its own (a Ray worker): ./.env where it runs; set vars win
    _importable_here()
    hc = HydraConfig.get()
    _scrub_saved_configs(hc)
    return run_job(
        cfg,
        hc.runtime.output_dir,
        model_name=hc.runtime.choices.get("model"),
        root=project_root(),
        raise_errors=_user_full_error(),
        batch_phase=_batch_phase(cfg, hc),
    )


def _batch_phase(cfg: DictConfig, hc: Any) -> str:
    """A batch job of a multirun whose callbacks collect at the sweep's end only submits its batches, so
    every job's batches are submitted before the sweep waits for any (modelfactory/batch/sweep.py)."""
    if hc.mode != RunMode.MULTIRUN or OmegaConf.select(cfg, "runner.provider_batch.enabled") is not True:
        return "all"
    from .batch.sweep import sweep_collects  # only then: batch mode's imports cost start-up

    return "submit" if sweep_collects(hc.callbacks) else "all"


def _user_full_error() -> bool:
    """``HYDRA_FULL_ERROR=1`` as the user set it (``run_cli`` sets it itself to catch Hydra's errors)."""
    return os.environ.get(_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "")) == "1"


def _job(cfg: DictConfig) -> float | None:
    """What Hydra calls per job in this process: :func:`run_task`, then the exit code of a single run;
    in a multirun, the job's primary score (:func:`primary_score`: what ``hydra/sweeper=search``
    maximizes)."""
    global _jobs_started
    _jobs_started += 1
    _skip_the_collections_at_exit()  # in a launcher's worker process too
    try:
        code = run_task(cfg)
    finally:  # Hydra returns this very cfg from the job (submitit pickles it): no literal key in it
        mask_job_config(cfg)
    # A failing job in a sweep is recorded (job.json, results.jsonl); only a single run sets the exit code.
    # Ctrl-C stops a sweep too.
    hc = HydraConfig.get()
    if code == EXIT_INTERRUPTED or (code and hc.mode != RunMode.MULTIRUN):
        sys.exit(code)
    return primary_score(hc.runtime.output_dir, code) if hc.mode == RunMode.MULTIRUN else None


def primary_score(output_dir: str | os.PathLike[str], code: int) -> float | None:
    """A finished job's primary score (``job.json``'s ``primary.value``, the mean of ``task.primary_scorer``,
    default the first of ``task.scorers``), or None (never NaN: it would crash Optuna's study) when the
    job failed (exit 1, 2), stopped at its ``runner.max_cost_usd`` (exit 3: a mean over part of the
    items), scored no item, or its task has no scorers. A search counts a None trial as failed and goes on.
    """
    import math

    from .job.record import read_job

    primary = (read_job(output_dir) or {}).get("primary") if code == 0 else None
    value = primary.get("value") if isinstance(primary, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


main = hydra.main(version_base="1.3", config_path=SHIPPED, config_name="config")(_job)


def null_group_overrides(args: list[str], configs: ConfigDirs) -> list[str]:
    """``model=null``-style overrides of a config group the app needs: Hydra answers them with a raw
    ``ValueError`` traceback, so they are refused here with the names to choose from."""
    out = []
    for arg in args:
        name, eq, value = arg.lstrip("+").partition("=")
        if eq and value.strip().lower() in ("null", "~") and any((d / name).is_dir() for d in configs.dirs):
            choices = ", ".join(configs.names(name))
            out.append(f"error: {arg}: the '{name}' config group needs a config name, one of: {choices}")
    return out


def skip_mode_probe(args: list[str]) -> None:
    """Spare Hydra its first of two full compositions on a plain single run (~0.1 s of a cold start).

    Hydra composes the whole config once only to read ``hydra.mode``, then again to run. Nothing in our
    ``config.yaml`` sets the mode; only ``-m`` or an override (``experiment=...``, ``hydra.mode``, a
    ``hydra/...`` group) can, or a user's config dir (its ``config.yaml`` may). When none is present, the
    answer is known: no mode, i.e. a single run.
    """
    touches_mode = any(
        a in ("-m", "--multirun")
        or a.startswith(("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir"))
        or "experiment" in a
        or "hydra.mode" in a
        or a.lstrip("+~").startswith("hydra/")
        for a in args
    )
    try:
        from hydra._internal.hydra import Hydra
    except ImportError:  # pragma: no cover - a Hydra without this internal: keep its own behaviour
        return
    if not touches_mode and hasattr(Hydra, "get_mode"):
        Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]


def _hydra_error(exc: BaseException) -> str:
    """Hydra's error and its cause (OmegaConf's, which names the key), without a traceback."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError):
        text = f"cannot write the run's directory (hydra.run.dir / hydra.sweep.dir): {text}"
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += f"\n{str(cause).strip()}"
    return text


def _config_dir_arg(args: list[str]) -> Path | None:
    """The ``--config-dir``/``-cd`` Hydra will read from ``args`` (None: none given)."""
    for i, arg in enumerate(args):
        for flag in ("--config-dir", "-cd"):
            if arg == flag and i + 1 < len(args):
                return Path(args[i + 1])
            if arg.startswith(flag + "="):
                return Path(arg.split("=", 1)[1])
    return None


def _shell(args: list[str]) -> tuple[str, str] | None:
    """``-sc install=bash`` -> ("install", "bash"); None when the command line asks no completion."""
    for i, arg in enumerate(args):
        value = None
        if arg in ("-sc", "--shell-completion") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(("-sc=", "--shell-completion=")):
            value = arg.split("=", 1)[1]
        if value and "=" in value:
            action, shell = value.split("=", 1)
            return action, shell
    return None


def completion_script(prog: str = "modelfactory") -> str:
    """Bash (and zsh, through bashcompinit) completion for the console script: the subcommands, then
    Hydra's own completion of ``run``'s overrides (``<prog> run -sc query=bash``). Hydra's script would
    call ``modelfactory -sc query=bash``, which is not the app."""
    return f"""_modelfactory_completion()
{{
    local words=($COMP_LINE)
    local word=${{words[$COMP_CWORD]}}
    if (( COMP_CWORD < 2 )); then
        COMPREPLY=($(compgen -W "run list check serve estimate compare batches merge" -- "$word"))
        return
    fi
    if [ "${{words[1]}}" != "run" ]; then
        COMPREPLY=($(compgen -o default -- "$word"))
        return
    fi
    local choices=$(COMP_POINT=$COMP_POINT COMP_LINE=$COMP_LINE {prog} run -sc query=bash)
    COMPREPLY=($(compgen -o nospace -o default -W "$choices" -- "$word"))
}}
COMP_WORDBREAKS=${{COMP_WORDBREAKS//=}}
COMP_WORDBREAKS=$COMP_WORDBREAKS complete -o nospace -o default -F _modelfactory_completion {prog}
"""


def _completion(action: str, shell: str) -> bool:
    """The console script's completion: its own install script; a query's line stripped of ``run`` so
    Hydra completes the overrides after it. True when fully answered here."""
    if shell not in ("bash", "zsh"):
        if action in ("install", "uninstall"):  # Hydra's script would complete `modelfactory`, not `run`
            print(
                f"error: -sc {action}={shell}: the modelfactory command completes in bash and zsh: "
                'eval "$(modelfactory run -sc install=bash)"',
                file=sys.stderr,
            )
            sys.exit(EXIT_CONFIG)
        return False
    if action == "install":
        print(completion_script())
        return True
    if action == "uninstall":
        print("complete -r modelfactory 2> /dev/null; unset -f _modelfactory_completion")
        return True
    line = os.environ.get("COMP_LINE", "")
    words = line.split(" ", 2)
    if action == "query" and len(words) >= 2 and words[1] == "run":
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]])  # Hydra strips the program's name only
    return False


def _user_configs(args: list[str]) -> tuple[ConfigDirs, list[str]]:
    """The user's config dir (``--config-dir``, else ``./conf``) and ``args`` with it for Hydra."""
    explicit = _config_dir_arg(args)
    configs = ConfigDirs.find(explicit)
    if explicit is None and configs.user is not None:
        args = [*configs.hydra_args(), *args]
    return configs, args


def run_cli(args: list[str] | None = None, prog: str = PROG) -> None:
    """The app's command line (``modelfactory run ...``; ``python run.py ...`` with ``prog=run.py``)."""
    args = list(sys.argv[1:] if args is None else args)
    _skip_the_collections_at_exit()
    load_dotenv()  # keys for the backends, read from the environment; never copied anywhere
    configs, args = _user_configs(args)
    keys = secret_overrides(args)
    if keys:
        print(refusal_message(keys, args, configs.dirs), file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    null_groups = null_group_overrides(args, configs)
    if null_groups:
        print("\n".join(null_groups), file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    shell = _shell(args)
    if prog == PROG and shell and _completion(*shell):
        return
    empty_dirs = empty_dir_overrides(args)
    if empty_dirs:  # Hydra would write .hydra/ and the job log into the current dir before any job ran
        print(f"error: {ConfigError(empty_dirs, title='invalid run dir')}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    skip_mode_probe(args)
    # Hydra reads sys.argv; its usage line, --help and completion hints name the program by argv[0].
    sys.argv = [prog, *args]
    # Hydra prints its own errors (a bad override, an unknown key, an unwritable run dir) as a traceback
    # and exits 1; with HYDRA_FULL_ERROR=1 it raises them instead, to be told here in one message, exit 2.
    os.environ.setdefault(_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", ""))
    full = _user_full_error()
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except Exception as exc:
        if full:  # the traceback asked for, as Python prints it, but scrubbed of every key we know
            from .secrets import scrubbed_traceback

            print(scrubbed_traceback(exc), file=sys.stderr, end="")
            sys.exit(1)
        print(f"error: {_hydra_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_CONFIG if _jobs_started == 0 else 1)
    except KeyboardInterrupt:  # outside a job (a job records it in job.json and exits 130 itself)
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)

"""The modelfactory app's entry point: Hydra composes the config, ``modelfactory.app.run_job`` runs the job.

python run.py                                   # one prompt, offline: conf/config.yaml's default model
                                                # (transformers_smollm2: SmolLM2-135M-Instruct)
python run.py model=openai_gpt4o prompt="Hi"    # any config in conf/model/
python run.py task=dataset runner.concurrency=16
python run.py -m model=a,b generation.temperature=0,0.7     # a sweep, with a summary table at the end

Keys never go on the command line (Hydra writes every override to disk in clear): such an override is
refused before Hydra starts. Put them in the environment or in ./.env (loaded here, never copied).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from modelfactory.overrides import refusal_message, scrub_saved_config, secret_overrides

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("modelfactory.run")


def _scrub_saved_configs(hc: Any) -> None:
    """Mask keys written literally in config files out of what Hydra saved for this run (and the sweep)."""
    try:
        if scrub_saved_config(Path(hc.runtime.output_dir) / ".hydra" / "config.yaml"):
            print(
                "warning: a key is written literally in a config file; it was masked in this run's "
                ".hydra/config.yaml. Prefer ${oc.env:VAR} in config files.",
                file=sys.stderr,
            )
        if hc.mode == RunMode.MULTIRUN:
            scrub_saved_config(Path(hc.sweep.dir) / "multirun.yaml")
    except Exception as exc:  # never let the scrubbing itself fail a job
        log.warning("could not check the saved config for literal keys: %s", exc)


def run(cfg: DictConfig) -> int:
    """One job under Hydra: scrub what Hydra saved, then :func:`modelfactory.app.run_job`."""
    from modelfactory.app import run_job
    from modelfactory.datasets import load_dotenv

    load_dotenv()  # a job in a process of its own (a Ray worker): ./.env where it runs; set vars win
    if str(ROOT) not in sys.path:  # a job in another process (submitit, Ray) imports the project's own
        sys.path.insert(0, str(ROOT))  # modules (a CallableModel's fn) as `python run.py` itself does
    hc = HydraConfig.get()
    _scrub_saved_configs(hc)
    return run_job(
        cfg,
        hc.runtime.output_dir,
        model_name=hc.runtime.choices.get("model"),
        root=ROOT,
        raise_errors=_user_full_error(),
        batch_phase=_batch_phase(cfg, hc),
    )


def _batch_phase(cfg: DictConfig, hc: Any) -> str:
    """A batch job of a multirun whose callbacks collect at the sweep's end only submits its batches, so
    every job's batches are submitted before the sweep waits for any (modelfactory/batch/sweep.py)."""
    if hc.mode != RunMode.MULTIRUN or OmegaConf.select(cfg, "runner.mode") != "batch":
        return "all"
    from modelfactory.batch.sweep import sweep_collects  # only then: batch mode's imports cost start-up

    return "submit" if sweep_collects(hc.callbacks) else "all"


def _user_full_error() -> bool:
    """``HYDRA_FULL_ERROR=1`` as the user set it (``cli`` sets it itself to catch Hydra's errors)."""
    return os.environ.get(_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "")) == "1"


_FULL_ERROR = "MODELFACTORY_FULL_ERROR"
EXIT_CONFIG = 2  # a config error, Hydra's own included (the README's exit codes)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
_jobs_started = 0  # a Hydra failure before any job ran is a config error (exit 2), not a job's (exit 1)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    global _jobs_started
    _jobs_started += 1
    code = run(cfg)
    # A failing job in a sweep is recorded (job.json, results.jsonl); only a single run sets the exit code.
    # Ctrl-C stops a sweep too.
    if code == EXIT_INTERRUPTED or (code and HydraConfig.get().mode != RunMode.MULTIRUN):
        sys.exit(code)


def null_group_overrides(args: list[str], conf: Path) -> list[str]:
    """``model=null``-style overrides of a config group the app needs: Hydra answers them with a raw
    ``ValueError`` traceback, so they are refused here with the names to choose from."""
    out = []
    for arg in args:
        name, eq, value = arg.lstrip("+").partition("=")
        if eq and value.strip().lower() in ("null", "~") and (conf / name).is_dir():
            choices = ", ".join(sorted(p.stem for p in (conf / name).glob("*.yaml")))
            out.append(f"error: {arg}: the '{name}' config group needs a config name, one of: {choices}")
    return out


def skip_mode_probe(args: list[str]) -> None:
    """Spare Hydra its first of two full compositions on a plain single run (~0.1 s of a cold start).

    Hydra composes the whole config once only to read ``hydra.mode``, then again to run. Nothing in our
    ``conf/config.yaml`` sets the mode; only ``-m`` or an override (``experiment=...``, ``hydra.mode``, a
    ``hydra/...`` group) can. When none is present, the answer is known: no mode, i.e. a single run.
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


def cli() -> None:
    args = sys.argv[1:]
    keys = secret_overrides(args)
    if keys:
        print(refusal_message(keys, args, ROOT / "conf"), file=sys.stderr)
        sys.exit(2)
    if Path(".env").is_file():  # keys for the backends, read from the environment; never copied anywhere
        from modelfactory.datasets import load_dotenv

        load_dotenv()
    null_groups = null_group_overrides(args, ROOT / "conf")
    if null_groups:
        print("\n".join(null_groups), file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    from modelfactory.errors import ConfigError
    from modelfactory.jobchecks import empty_dir_overrides

    empty_dirs = empty_dir_overrides(args)
    if empty_dirs:  # Hydra would write .hydra/ and the job log into the current dir before any job ran
        print(f"error: {ConfigError(empty_dirs, title='invalid run dir')}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    skip_mode_probe(args)
    # Hydra prints its own errors (a bad override, an unknown key, an unwritable run dir) as a traceback
    # and exits 1; with HYDRA_FULL_ERROR=1 it raises them instead, to be told here in one message, exit 2.
    os.environ.setdefault(_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", ""))
    full = _user_full_error()
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except Exception as exc:
        if full:
            raise
        print(f"error: {_hydra_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_CONFIG if _jobs_started == 0 else 1)
    except KeyboardInterrupt:  # outside a job (a job records it in job.json and exits 130 itself)
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    cli()

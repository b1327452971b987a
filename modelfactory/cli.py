"""``modelfactory`` console script: ``run`` the app; ``list``, ``check`` (no network), ``serve`` its configs.

modelfactory run model=transformers_tiny prompt="Hi"   # the app (modelfactory run --help)
modelfactory list                           # the model configs: shipped, and ./conf/model/ (or --config-dir)
modelfactory check                          # every one of them
modelfactory check model=azure_openai model.api_version=2024-10-21
modelfactory serve server.port=8000          # config.yaml's model over an OpenAI-compatible API
modelfactory estimate model=openai_gpt4o task=dataset task.path=items.jsonl   # tokens, $ online vs batch
modelfactory compare multirun/2026-12-01/10-00-00 multirun/2026-12-02/09-30-00 -o report.html
modelfactory score outputs/2026-12-01/10-00-00 scorer=includes   # re-score a run's replies, no model call
modelfactory compare outputs/2026-12-01/10-00-00 outputs/2026-12-02/09-30-00   # two scored runs, paired
modelfactory batches list outputs/2026-12-01/10-00-00        # a runner.provider_batch run's provider batches
modelfactory batches cancel outputs/2026-12-01/10-00-00
modelfactory merge multirun/2026-12-01/10-00-00   # a sharded sweep's results.jsonl, one per model/params
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._config_dirs import ComposeOnce, ConfigDirs, project_root
from ._envfile import load_dotenv
from .errors import Problem
from .secrets import mask_urls

__all__ = ["main", "merge", "serve"]


def model_names(configs: ConfigDirs) -> list[str]:
    return configs.names("model")


def _choices(configs: ConfigDirs) -> str:
    return "one of: " + ", ".join(model_names(configs)) + " (modelfactory list)"


def check(configs: ConfigDirs, overrides: list[str], warnings: list[Problem] | None = None) -> list[Problem]:
    """Compose and validate the chosen config (or every one): all problems, no network, no weights.
    ``warnings`` (when given) receives what works but should change: smolagents' names in a config."""
    from hydra.errors import HydraException

    from .factory import config_warnings, validate_config

    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("model=")]
    rest = [o for o in overrides if not o.startswith("model=")]
    names = chosen or model_names(configs)
    problems: list[Problem] = []
    for name in names:
        source = f"conf/model/{name}.yaml"
        if name.strip().lower() in ("null", "~", ""):
            problems.append(Problem("model", f"model={name}: needs a config name", _choices(configs), source))
            continue
        try:
            cfg = configs.compose([f"model={name}", *rest])
        except (HydraException, ValueError) as exc:  # Hydra raises a bare ValueError for some overrides
            problems.append(Problem("config", str(exc).splitlines()[0], "check the override syntax", source))
            continue
        found = validate_config(cfg.model, source=source, environment=True)
        if not chosen and found and _platform_only(cfg.model) and warnings is not None:
            # a config for another platform (MLX: macOS; vLLM: a CUDA GPU) checked with all the others
            # is no failure here; named (model=mlx_smollm2) it is
            warnings += found
            continue
        problems += found
        if warnings is not None:
            warnings += config_warnings(cfg.model, source=source)
    return problems + task_scoring_problems(configs, rest)


def _platform_only(node: Any) -> str:
    """The one platform a config's backend runs on (its spec's ``platform_only``), or ``""``."""
    from .factory import locate_target

    target, _ = locate_target(node.get("_target_") if hasattr(node, "get") else None)
    return str(getattr(getattr(target, "Spec", None), "platform_only", "") or "")


def task_scoring_problems(configs: ConfigDirs, overrides: list[str]) -> list[Problem]:
    """The task's ``scorers``, checked once: a bad scorer config, items without the target one needs."""
    import dataclasses

    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from .errors import ModelFactoryError
    from .eval.scoring import task_problems

    try:
        task = OmegaConf.to_container(configs.compose(overrides).task, resolve=True)
    except (HydraException, ValueError, AttributeError):  # a config that does not compose: reported above
        return []
    if not isinstance(task, dict) or not task.get("scorers"):
        return []
    try:
        found = task_problems({str(k): v for k, v in task.items()})
    except ModelFactoryError as exc:  # e.g. task=humaneval without the eval extra
        found = [Problem("task", str(exc).splitlines()[0])]
    return [dataclasses.replace(p, source=p.source or "task") for p in found]


def capability_notes(configs: ConfigDirs, overrides: list[str]) -> list[str]:
    """What changes the requests of the chosen models (``stop`` / ``temperature`` not sent), for ``check``."""
    from .capabilities import request_capabilities

    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("model=")]
    rest = [o for o in overrides if not o.startswith("model=")]
    notes = []
    for name in chosen or model_names(configs):
        try:
            model = configs.compose([f"model={name}", *rest]).model
            model_id = str(model.get("model_id") or "")
            stop, temperature = model.get("supports_stop"), model.get("supports_temperature")
        except Exception:  # noqa: BLE001 - an unreadable config is already one of check's problems
            continue
        if model_id and "${" not in model_id:
            caps = request_capabilities(model_id, stop, temperature, provider_map=True)
            notes += [f"conf/model/{name}.yaml: model {model_id!r}: {n}" for n in caps.notes()]
    return notes


def backend_notes(configs: ConfigDirs, overrides: list[str]) -> list[str]:
    """Which jobs each chosen config's backend suits (``Model.best_for``: the local backends say it), so
    ``check`` answers "transformers or llama.cpp?" where the choice is made."""
    from .factory import locate_target

    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("model=")]
    rest = [o for o in overrides if not o.startswith("model=")]
    notes = []
    for name in chosen or model_names(configs):
        try:
            target, _ = locate_target(configs.compose([f"model={name}", *rest]).model.get("_target_"))
        except Exception:  # noqa: BLE001 - an unreadable config is already one of check's problems
            continue
        best_for = getattr(target, "best_for", "")
        if best_for and isinstance(best_for, str):
            notes.append(f"conf/model/{name}.yaml: {target.__name__} is the local backend for {best_for}")
    return notes


def estimate(configs: ConfigDirs, overrides: list[str]) -> int:
    """``modelfactory estimate [overrides]``: items, tokens and cost (online vs batch) of the job the
    overrides describe, without sending a request (local models: the tokenizer is loaded, not run)."""
    from hydra.errors import HydraException

    from .errors import ModelFactoryError
    from .factory import build_model
    from .job.items import task_items
    from .pricing import estimate_job

    try:
        cfg = configs.compose(overrides)
    except HydraException as exc:
        print(f"error: {mask_urls(str(exc).splitlines()[0])}", file=sys.stderr)
        return 2
    try:
        items = task_items(cfg, project_root())
        model = build_model(cfg.model)
        max_tokens = (cfg.get("generation") or {}).get("max_tokens")
        est = estimate_job(model, items, int(max_tokens) if max_tokens else None)
    except ModelFactoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    usd = lambda v: "unknown (no price: set model.price)" if v is None else f"${v:.4f}"  # noqa: E731
    print(f"model:          {model.model_id}")
    print(f"items:          {est['items']}")
    print(f"input tokens:   {est['input_tokens']} (counted with {est['token_count']})")
    print(f"output tokens:  {est['output_tokens']} (assumed: {est['output_assumed']})")
    print(f"cost online:    {usd(est['cost_online_usd'])}")
    print(f"cost batch:     {usd(est['cost_batch_usd'])}")
    return 0


def serve(configs: ConfigDirs, overrides: list[str]) -> int:
    """``modelfactory serve [overrides]``: compose like run.py, build the model, load it, serve it under
    its id and under the config name it was chosen by (``model=transformers_smollm2``, the default)."""
    from hydra.errors import HydraException

    from .errors import ConfigError, ModelFactoryError
    from .factory import build_model
    from .serve import ServerSettings, serve_forever
    from .serve.app import import_deps
    from .serve.server import open_without_key

    nulls = [o for o in overrides if o.startswith("model=") and o[6:].strip().lower() in ("null", "~", "")]
    if nulls:
        print(f"error: {nulls[0]}: needs a config name; {_choices(configs)}", file=sys.stderr)
        return 2
    try:
        cfg = configs.compose(overrides, return_hydra_config=True)
    except (HydraException, ValueError) as exc:  # Hydra raises a bare ValueError for some overrides
        print(f"error: {mask_urls(str(exc).splitlines()[0])}", file=sys.stderr)
        return 2
    try:
        settings = ServerSettings.from_config(cfg.get("server"))
        refused = open_without_key(settings)
        if refused:  # before loading any weights
            print(f"error: {refused}", file=sys.stderr)
            return 2
        chosen = cfg.hydra.runtime.choices.get("model")  # the config group option, e.g. transformers_smollm2
        if chosen:
            settings.aliases.append(str(chosen))
        model = build_model(cfg.model)
        load = getattr(model, "load", None)
        if callable(load):  # weights now, not on the first request
            load()
        import_deps()
    except ModelFactoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    return serve_forever(model, settings)


def batches(action: str, run_dir: Path) -> int:
    from .batch.manage import cancel_batches, list_batches
    from .errors import ConfigError, ModelFactoryError

    try:
        lines = list_batches(run_dir) if action == "list" else cancel_batches(run_dir)
    except ModelFactoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    for line in lines:
        print(line)
    return 0


def merge(sweep_dir: Path, out_dir: Path | None) -> int:
    """``modelfactory merge <sweep dir>``: one results.jsonl per model/parameter set of a (sharded)
    sweep; exit code 1 when a shard is missing or failed (what there is is still written)."""
    from .merge import merge_sweep

    if not sweep_dir.is_dir():
        print(f"error: no sweep directory {sweep_dir}", file=sys.stderr)
        return 2
    sets = merge_sweep(sweep_dir, out_dir)
    if not sets:
        print(f"error: no job directories (with .hydra/overrides.yaml) under {sweep_dir}", file=sys.stderr)
        return 2
    for merged in sets:
        where = merged.path / "results.jsonl" if merged.path else "?"
        shards = f", {len(merged.jobs)}/{merged.shards} shards" if merged.shards > 1 else ""
        print(f"{merged.model}{shards} -> {where}")
        for problem in merged.problems:
            print(f"    {problem}")
    incomplete = sum(1 for m in sets if not m.complete)
    print(f"{len(sets)} set(s) merged" + (f", {incomplete} incomplete" if incomplete else ""))
    return 1 if incomplete else 0


def _add_score_parser(sub: Any) -> None:
    p_score = sub.add_parser("score", help="re-score a finished run's replies (no model call)")
    p_score.add_argument("run_dir", type=Path, help="the run's output dir (holds results.jsonl)")
    p_score.add_argument(
        "overrides", nargs="*", help="scorer=NAME[,NAME] scorer.KEY=VALUE (default: the task's scorers)"
    )
    p_score.add_argument("--workers", type=int, default=2, help="replies scored at once (default 2)")


def _two_runs(paths: list[Path]) -> bool:
    """``compare A B`` on two single runs (not sweep dirs): the paired score comparison."""
    from .eval.commands import is_run_dir

    return len(paths) == 2 and all(is_run_dir(p) for p in paths)


def _run_args(argv: list[str]) -> list[str] | None:
    """The app's own command line when ``argv`` is ``[--config-dir DIR] run ...`` (Hydra parses it,
    ``--help``, ``-m``, ``-sc`` included), else None."""
    if argv[:1] == ["run"]:
        return argv[1:]
    if argv[:1] == ["--config-dir"] and argv[2:3] == ["run"]:
        return [*argv[:2], *argv[3:]]
    if argv[:1] and argv[0].startswith("--config-dir=") and argv[1:2] == ["run"]:
        return [argv[0], *argv[2:]]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    load_dotenv()  # ./.env, for every command (_envfile.py: the one loader); set variables win
    run_args = _run_args(argv)
    if run_args is not None:
        from ._hydra_app import run_cli

        run_cli(run_args)
        return 0
    return _dispatch(_parser().parse_args(argv))


def _parser() -> argparse.ArgumentParser:
    """Every command but ``run`` (Hydra parses that one's command line, see :func:`_run_args`)."""
    parser = argparse.ArgumentParser(prog="modelfactory", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="your config dir, searched before the shipped configs (default: ./conf when there is one)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", add_help=False, help="run a job or, with -m, a sweep (modelfactory run --help)")
    sub.add_parser("list", help="list the model configs (shipped, and model/ of your config dir)")
    p_check = sub.add_parser("check", help="validate configs and env vars without network or weights")
    p_check.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=openai_gpt4o")
    p_serve = sub.add_parser("serve", help="serve a configured model over an OpenAI-compatible HTTP API")
    p_serve.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model=transformers_smollm server.port=8080"
    )
    p_est = sub.add_parser("estimate", help="items, tokens and cost (online vs batch) of a job; no request")
    p_est.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=openai_gpt4o task=dataset")
    _add_score_parser(sub)
    p_compare = sub.add_parser(
        "compare", help="one table and report.html across sweep dirs; two run dirs: a paired score comparison"
    )
    p_compare.add_argument(
        "sweep_dirs", nargs="+", type=Path, help="multirun sweep dirs, e.g. multirun/<d>/<t>"
    )
    p_compare.add_argument(
        "-o", "--out", type=Path, default=Path("report.html"), help="default: ./report.html"
    )
    p_compare.add_argument("--scorer", default=None, help="two run dirs: compare this scorer only")
    p_batches = sub.add_parser(
        "batches", help="list or cancel the provider batches of a runner.provider_batch run"
    )
    p_batches.add_argument("action", choices=["list", "cancel"])
    p_batches.add_argument("run_dir", type=Path, help="the run's output dir (holds batches.json)")
    p_merge = sub.add_parser("merge", help="merge a sharded sweep into one results.jsonl per model/params")
    p_merge.add_argument("sweep_dir", type=Path, help="the multirun directory (hydra.sweep.dir)")
    p_merge.add_argument(
        "--out", type=Path, default=None, help="where to write (default: <sweep_dir>/merged)"
    )
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "merge":  # reads a sweep dir only: no config needed
        return merge(args.sweep_dir, args.out)
    if args.command == "score":
        from .eval.commands import score_command

        return score_command(args.run_dir, args.overrides, args.workers)
    if args.command == "compare" and _two_runs(args.sweep_dirs):
        from .eval.commands import compare_command

        return compare_command(args.sweep_dirs[0], args.sweep_dirs[1], args.scorer)
    if args.command == "compare":  # reads sweep dirs only: no config needed
        from .report import compare_cli

        return compare_cli(args.sweep_dirs, args.out)
    if args.command == "batches":
        return batches(args.action, args.run_dir)
    if args.config_dir is not None and not args.config_dir.is_dir():
        print(f"error: --config-dir {args.config_dir}: no such folder", file=sys.stderr)
        return 2
    configs = ConfigDirs.find(args.config_dir)
    if str(Path.cwd()) not in sys.path:  # configs name the user's own modules (CallableModel's fn)
        sys.path.insert(0, str(Path.cwd()))
    if args.command == "list":
        for name in model_names(configs):
            print(name)
        return 0
    if args.command == "serve":
        return serve(configs, args.overrides)
    if args.command == "estimate":
        return estimate(configs, args.overrides)
    return _check_command(configs, args.overrides)


def _check_command(configs: ConfigDirs, overrides: list[str]) -> int:
    """``modelfactory check``: every problem of the configs at once, warnings and notes; exit 1 on a problem."""
    warnings: list[Problem] = []
    once = ComposeOnce.over(configs)  # the three passes below read the same configs
    problems = check(once, overrides, warnings)
    notes = capability_notes(once, overrides) + backend_notes(once, overrides)
    # a value echoed by Hydra or a validator may be a URL holding credentials (model.api_base=https://u:KEY@h)
    for w in warnings:
        print(
            mask_urls(f"warning: {w.source}: {w.key}: {w.problem}" + (f"\n    fix: {w.fix}" if w.fix else ""))
        )
    for note in notes:
        print(mask_urls(f"note: {note}"))
    for p in problems:
        print(mask_urls(f"{p.source}: {p.key}: {p.problem}" + (f"\n    fix: {p.fix}" if p.fix else "")))
    checked = overrides and any(o.startswith("model=") for o in overrides)
    print(f"{len(problems)} problem(s)" + ("" if checked else f" in {len(model_names(configs))} configs"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

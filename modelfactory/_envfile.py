"""``./.env``: the one loader every entry point uses (``modelfactory <command>``, ``python run.py``, a
job in a process of its own), so a key put there is seen the same way everywhere."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["load_dotenv"]


def load_dotenv(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Load ``KEY=value`` lines from ``.env`` (default: in the current directory) into ``os.environ``.

    Variables already set in the environment win. Returns the names loaded (never the values). Keys
    kept here never reach any output file: configs refer to them by name only.
    """
    p = Path(path) if path is not None else Path.cwd() / ".env"
    if not p.is_file():
        return []
    from dotenv import dotenv_values

    loaded = []
    for name, value in dotenv_values(p).items():
        if value is not None and name not in os.environ:
            os.environ[name] = value
            loaded.append(name)
    return loaded

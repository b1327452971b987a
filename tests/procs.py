"""What the suite appends to a Python script it runs in a process of its own (``python -c``)."""

from __future__ import annotations

FREEZE_AT_EXIT = "\nimport gc as _gc\n_gc.freeze()\n"
"""A script's last lines, once it has printed what the test reads: CPython's teardown runs full garbage
collections over every object still alive (~0.8 s after torch and transformers, ~0.5 s after litellm,
testing nothing); frozen objects are left out of them, as run.py does at its exit (modelfactory._hydra_app).
Only the teardown changes: atexit hooks still run, and the test reads the output and the exit status."""

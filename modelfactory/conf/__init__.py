"""The app's shipped configs (package data): Hydra reads them as ``pkg://modelfactory.conf``.

A user's own config dir (``--config-dir``, or ``./conf`` found in the current directory) is searched
before this one (:mod:`modelfactory._config_dirs`).
"""

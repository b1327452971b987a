"""Scoring replies (issue 25): which model was right, with an uncertainty on every number.

- :mod:`.score` what a scorer is (``Score``, ``ScorerConfig``, the ``@scorer`` registry);
  :mod:`.scorers` one module per family; :mod:`.scoring` builds them from configs and scores rows.
- :mod:`.metrics` mean with stderr and a seeded bootstrap CI, epochs reducers, pass@k.
- :mod:`.compare` two runs on the same items: paired bootstrap CI, McNemar, a verdict.
- :mod:`.rescore` ``modelfactory score RUN_DIR``; :mod:`.commands` the CLI's score/compare.
- :mod:`.sandbox` the code scorer's child process; :mod:`.tasks` humaneval, capitals, the item view.
"""

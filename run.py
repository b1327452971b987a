"""``python run.py [overrides]`` from a clone: the same app as ``modelfactory run [overrides]``
(:mod:`modelfactory._hydra_app`), kept for the commands in the README and people's shell history.

python run.py                                   # one prompt, offline: the default model
                                                # (transformers_smollm2: SmolLM2-135M-Instruct)
python run.py model=openai_gpt4o prompt="Hi"    # any config in modelfactory/conf/model/ or ./conf/model/
python run.py task=dataset runner.concurrency=16
python run.py -m model=a,b generation.temperature=0,0.7     # a sweep, with a summary table at the end
"""

from __future__ import annotations

import sys

from modelfactory._hydra_app import run_cli

if __name__ == "__main__":
    run_cli(sys.argv[1:], prog=sys.argv[0])

"""Cold start to first reply, against the same local OpenAI-compatible server (issue 7, target 1).

    .venv/bin/python -m bench.cold_start [rounds]

Compares `python run.py model=local_server prompt=hi` with a plain smolagents script and a plain
openai script making the same call; prints medians over alternating runs and the ratios.
"""

from __future__ import annotations

import functools
import sys
import tempfile

from bench._common import PY, alternate, clean_env, local_server, report, time_command

SMOLAGENTS = """
import sys
from smolagents import OpenAIServerModel
m = OpenAIServerModel(model_id="tiny-llama", api_base=sys.argv[1], api_key="EMPTY")
print(m.generate([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]).content)
"""
OPENAI = """
import sys
import openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="EMPTY")
r = c.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}])
print(r.choices[0].message.content)
"""


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    env = clean_env()
    with local_server() as url, tempfile.TemporaryDirectory() as tmp:
        api = f"{url}/v1"
        ours = [
            PY,
            "run.py",
            "model=local_server",
            f"model.api_base={api}",
            "prompt=hi",
            # A fresh output dir per run: in one dir the runner would resume and skip the finished item.
            f"hydra.run.dir={tmp}/${{now:%H%M%S_%f}}",
        ]
        commands = {
            "modelfactory run.py": ours,
            "smolagents script": [PY, "-c", SMOLAGENTS, api],
            "raw openai script": [PY, "-c", OPENAI, api],
        }
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        samples = alternate(
            {name: functools.partial(time_command, cmd, env, cpu[name]) for name, cmd in commands.items()},
            rounds,
        )
    print("wall time (what a user waits):")
    report(samples, "modelfactory run.py")
    print("CPU time, user+system (steadier on a busy machine):")
    report(cpu, "modelfactory run.py")


if __name__ == "__main__":
    main()

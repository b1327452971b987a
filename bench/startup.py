"""Import and composition costs (issue 7, targets 3 and 4), each in fresh processes.

    .venv/bin/python -m bench.startup [runs]

Prints the median of: `import modelfactory` (target <= 100 ms) and the first Hydra composition of
run.py's config (target <= 150 ms), both timed inside a fresh interpreter.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from bench._common import PY, ROOT, clean_env

IMPORT = """
import json, time
t = time.perf_counter()
import modelfactory
print(json.dumps({"import modelfactory": time.perf_counter() - t}))
"""
COMPOSE = """
import json, time
from hydra import compose, initialize_config_dir
t = time.perf_counter()
from modelfactory.job.spec import register_configs
register_configs()  # the job_spec node the config's defaults list starts with, as the app registers it
registered = time.perf_counter()
with initialize_config_dir(version_base="1.3", config_dir=%r):
    compose(config_name="config", overrides=["model=local_server"])
print(json.dumps({"register job_spec": registered - t, "compose run.py config": time.perf_counter() - registered}))
"""


def measure(code: str) -> dict[str, float]:
    out = subprocess.run(
        [PY, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        for code in (IMPORT, COMPOSE.replace("%r", repr(str(ROOT / "modelfactory" / "conf")))):
            for name, value in measure(code).items():
                samples.setdefault(name, []).append(value)
    # register job_spec: importing the spec (pydantic) and Hydra's ConfigStore, which every app start pays
    # before its first composition (it was not timed before the job spec existed: no target of its own)
    targets = {"import modelfactory": 0.100, "compose run.py config": 0.150}
    for name, values in samples.items():
        med = statistics.median(values)
        target = f" (target <= {targets[name] * 1e3:.0f} ms)" if name in targets else ""
        print(f"{name:>24}: median {med * 1e3:7.1f} ms over {len(values)} runs{target}")


if __name__ == "__main__":
    main()

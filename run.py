"""The modelfactory app: compose a model config, build it, run the prompt, record the result.

python run.py                                   # offline tiny model
python run.py model=openai_gpt4o prompt="Hi"    # any config in conf/model/
python run.py -m model=a,b generation.temperature=0,0.7
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("modelfactory.run")


def build_messages(cfg: DictConfig) -> list[dict[str, str]]:
    messages = []
    if cfg.get("system_prompt"):
        messages.append({"role": "system", "content": str(cfg.system_prompt)})
    messages.append({"role": "user", "content": str(cfg.prompt)})
    return messages


def run(cfg: DictConfig) -> int:
    """One job. Returns the exit code; never raises for a config or backend problem."""
    from modelfactory import ConfigError, ModelFactoryError, build_model

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    messages = build_messages(cfg)
    generation = {
        k: v for k, v in OmegaConf.to_container(cfg.generation, resolve=True).items() if v is not None
    }
    stops = list(cfg.get("stop_sequences") or []) or None
    result: dict[str, Any] = {
        "model_name": hc.runtime.choices.get("model"),
        "model_config": None,
        "messages": messages,
        "stop_sequences": stops,
        "generation": generation,
        "content": None,
        "token_usage": None,
        "latency_s": None,
        "error": None,
    }
    code = 0
    try:
        model = build_model(cfg.model)
        result["model_config"] = model.to_dict()
        start = time.perf_counter()
        reply = model(messages, stop_sequences=stops, **generation)
        result["latency_s"] = round(time.perf_counter() - start, 4)
        result["content"] = reply.content
        result["token_usage"] = reply.token_usage.to_dict() if reply.token_usage else None
    except ModelFactoryError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        result["error"] = {"type": type(exc).__name__, "message": str(exc)}
        print(f"error: {exc}", file=sys.stderr)
        log.info("error: %s: %s", type(exc).__name__, exc)  # to the job log; the console got stderr
        code = 2 if isinstance(exc, ConfigError) else 1
    result_path = out_dir / cfg.output.result_file
    result_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if result["content"] is not None:
        log.info("reply: %s", result["content"])
        if cfg.output.print_reply:
            print(result["content"])
    return code


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    # A failing job in a sweep is recorded in its result.json; only a single run sets the exit code.
    if code and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(code)


if __name__ == "__main__":
    main()

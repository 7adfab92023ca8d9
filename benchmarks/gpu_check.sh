#!/usr/bin/env bash
# The prepared GPU check (issue 15): one script, at most 8 minutes on one GPU, that runs
#   1. the CUDA tests (pytest's CUDA cases: `-k cuda`, the `device` fixture's cuda parameter and the *_on_cuda tests),
#   2. the 124M GPT-2 bf16 PPO throughput figure (ppo_gpu_throughput.py),
#   3. unit 5 executed with its GPU sizes (the notebook picks them when DEVICE is CUDA), kept in the results folder,
#   4. one PPO iteration of rlhf_lab on SmolLM2-135M-Instruct in bf16, then in fp16 (smollm2_memory.py's worker),
#   5. the same in bf16 with a LoRA policy and gradient checkpointing (issue 18: peft on CUDA, peak CUDA memory).
# It leaves JSON lines (gpu_check.jsonl: the device, every step's own lines, one status line per step, a summary)
# and the full log (gpu_check.log) in the results folder, and exits non-zero when a step failed.
#
# Usage (from anywhere; runs in the repository root):
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]          # on a CUDA machine; default benchmarks/results/gpu_check/<time>
#   bash benchmarks/gpu_check.sh --smoke RESULTS_DIR    # on CPU with tiny sizes: checks the script (a test runs this)
#   PYTHON=.venv/bin/python GPU_CHECK_BUDGET=480 ...   # the interpreter; the whole run's time limit in seconds
# Smoke mode: collects (does not run) the CUDA tests, runs ppo_gpu_throughput.py --smoke, converts unit 5 without
# executing it (CI executes it on CPU already), and runs the SmolLM2 step on a tiny GPT-2 in bf16 and fp32 on CPU
# (fp16 needs CUDA), and the LoRA + checkpointing step on the tiny GPT-2 in bf16 on CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUT="${1:-benchmarks/results/gpu_check/$(date +%Y%m%d_%H%M%S)}"
PY="${PYTHON:-python}"
BUDGET="${GPU_CHECK_BUDGET:-480}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
JSONL="$OUT/gpu_check.jsonl"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)
FAILED=()

now() { date +%Y-%m-%dT%H:%M:%S; }
log() { echo "[gpu_check $(now)] $*" | tee -a "$LOG" >&2; }

# step NAME TIMEOUT_S COMMAND...: run it with a time limit (cut to what is left of the budget), log everything,
# keep its JSON lines, then write one status line.
step() {
  local name="$1" limit="$2"; shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  [ "$left" -lt "$limit" ] && limit="$left"
  if [ "$limit" -le 5 ]; then
    log "$name: skipped, the ${BUDGET}s budget is spent"
    printf '{"kind": "gpu_check_step", "when": "%s", "step": "%s", "rc": null, "skipped": "budget spent"}\n' "$(now)" "$name" >> "$JSONL"
    FAILED+=("$name"); return
  fi
  log "$name: $* (limit ${limit}s)"
  local t0 out rc
  t0=$(date +%s)
  out="$OUT/$name.out"
  timeout --kill-after=10 "$limit" "$@" > "$out" 2>> "$LOG"
  rc=$?
  cat "$out" >> "$LOG"
  grep '^{' "$out" >> "$JSONL"
  local timed_out=false
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then timed_out=true; fi
  printf '{"kind": "gpu_check_step", "when": "%s", "step": "%s", "rc": %d, "timed_out": %s, "seconds": %d}\n' \
    "$(now)" "$name" "$rc" "$timed_out" "$(($(date +%s) - t0))" >> "$JSONL"
  [ "$rc" -eq 0 ] || FAILED+=("$name")
  log "$name: exit $rc after $(($(date +%s) - t0)) s"
}

# one JSON line with pytest's counts, read from its closing line ("9/662 tests collected ...", "5 passed, 4 skipped ...")
pytest_line() {
  "$PY" - "$OUT/cuda_tests.out" <<'PY'
import json, re, sys, time
lines = [x for x in open(sys.argv[1]).read().splitlines() if x.strip()]
last = lines[-1] if lines else ""
counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last)}
m = re.search(r"(\d+)(?:/\d+)? tests? collected", last)
if m:
    counts["collected"] = int(m.group(1))
print(json.dumps({"kind": "gpu_check_pytest", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "summary": last, **counts}))
PY
}

device_line() {
  "$PY" - "$SMOKE" <<'PY'
import json, sys, time
import torch
cuda = torch.cuda.is_available()
line = {"kind": "gpu_check_device", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "smoke": sys.argv[1] == "1",
        "torch": torch.__version__, "cuda": cuda, "cuda_version": torch.version.cuda}
if cuda:
    p = torch.cuda.get_device_properties(0)
    line.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 2**30, 1),
                bf16_supported=torch.cuda.is_bf16_supported())
print(json.dumps(line))
PY
}

log "results in $OUT (smoke=$SMOKE, budget ${BUDGET}s)"
device_line | tee -a "$LOG" >> "$JSONL"
if [ "$SMOKE" = 0 ] && ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  log "no CUDA device: this check is for a GPU (use --smoke to check the script on CPU)"
  exit 2
fi

if [ "$SMOKE" = 1 ]; then
  step cuda_tests 120 "$PY" -m pytest tests -k cuda --collect-only -q -p no:cacheprovider
  pytest_line >> "$JSONL"
  step ppo_gpu_throughput 180 "$PY" benchmarks/ppo_gpu_throughput.py --smoke --out "$OUT/ppo_gpu_throughput.jsonl"
  step unit5_gpu_sizes 120 "$PY" -m jupyter nbconvert --log-level=WARN --to script notebooks/05_ppo_pipeline.ipynb \
    --output-dir "$OUT" --output 05_ppo_pipeline.unexecuted
  step smollm2_bf16 120 "$PY" benchmarks/smollm2_memory.py --worker ours --mode full 1 --model tiny --device cpu --dtype bfloat16
  step smollm2_fp32 120 "$PY" benchmarks/smollm2_memory.py --worker ours --mode full 1 --model tiny --device cpu --dtype float32
  step smollm2_lora_gc_bf16 120 "$PY" benchmarks/smollm2_memory.py --worker ours --mode lora-gc 1 --model tiny --device cpu \
    --dtype bfloat16
else
  step cuda_tests 60 "$PY" -m pytest tests -k cuda -q -p no:cacheprovider -rs
  pytest_line >> "$JSONL"
  step ppo_gpu_throughput 120 "$PY" benchmarks/ppo_gpu_throughput.py --out "$OUT/ppo_gpu_throughput.jsonl"
  step unit5_gpu_sizes 200 env RLHF_LAB_DEVICE=cuda "$PY" -m jupyter nbconvert --log-level=WARN --to notebook --execute \
    --ExecutePreprocessor.timeout=200 --ExecutePreprocessor.store_widget_state=False notebooks/05_ppo_pipeline.ipynb \
    --output-dir "$OUT" --output 05_ppo_pipeline.gpu
  step smollm2_bf16 45 "$PY" benchmarks/smollm2_memory.py --worker ours --mode full 1 --device cuda --dtype bfloat16
  step smollm2_fp16 45 "$PY" benchmarks/smollm2_memory.py --worker ours --mode full 1 --device cuda --dtype float16
  step smollm2_lora_gc_bf16 45 "$PY" benchmarks/smollm2_memory.py --worker ours --mode lora-gc 1 --device cuda \
    --dtype bfloat16
fi

failed_json=""
for f in "${FAILED[@]+"${FAILED[@]}"}"; do failed_json+="${failed_json:+, }\"$f\""; done
printf '{"kind": "gpu_check_summary", "when": "%s", "smoke": %s, "seconds": %d, "failed": [%s]}\n' \
  "$(now)" "$([ "$SMOKE" = 1 ] && echo true || echo false)" "$(($(date +%s) - START))" "$failed_json" >> "$JSONL"
log "done in $(($(date +%s) - START)) s; failed: ${FAILED[*]:-none}"
[ "${#FAILED[@]}" -eq 0 ]

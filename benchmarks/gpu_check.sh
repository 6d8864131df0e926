#!/usr/bin/env bash
# The GPU check, one command (under 8 minutes on one H100/H200):
#
#   bash benchmarks/gpu_check.sh            # on a machine with one GPU, after `make setup`
#   bash benchmarks/gpu_check.sh --dry      # the same steps on the CPU with tiny shapes (< 1 min; CI runs it)
#
# 1. extract_features.py --preset 1b --device cuda --dtype bfloat16: examples/s, extraction / floor,
#    speedup over the reference method, MFU against the card's dense bf16 peak;
# 2. peers.py on the GPU (harness, bergson, reference method, floor on the same real pool examples);
# 3. a one-GPU torchrun of the pipeline up to the datastore stage (model=random_1b: ~0.8B parameters).
# Each step's figures and wall time go into one JSON summary, $OUT/gpu_check.json (OUT defaults to
# gpu_check_out/). Each step runs under a time limit (150, 180 and 120 s: 7.5 min at most; EXTRACT_LIMIT,
# PEERS_LIMIT, RUN_LIMIT); a step that fails or runs out (exit 124) is recorded with its exit status
# and the rest still run; the script exits non-zero if any step failed.
# Environment: PY (default .venv/bin/python), OUT, DATA_ROOT (default ../shared/data),
# LESS_CACHE_DIR (default $OUT/cache).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu_check_out}
DATA_ROOT=${DATA_ROOT:-../shared/data}
export LESS_CACHE_DIR=${LESS_CACHE_DIR:-$OUT/cache}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}
case "${1:-}" in
  --dry) DRY=1 ;;
  "") DRY=0 ;;
  *) echo "gpu_check.sh: unknown argument '$1' (use --dry or nothing)" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
TINY="--n 8 --length 48 --dim 256 --hidden 32 --layers 1 --inter 64 --heads 2 --vocab 512 --rank 4
      --token-budget 192 --projection-batch 8 --rounds 1"
if [ "$DRY" = 1 ]; then
  EF="--device cpu $TINY"
  PEERS="--device cpu --check 2 $TINY"
  RUN="model=tiny"
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device visible to $PY (use --dry for the CPU rehearsal)" >&2
    exit 2
  fi
  EF="--preset 1b --device cuda --dtype bfloat16 --rounds 3"
  PEERS="--preset 1b --device cuda --rounds 3"
  RUN="model=random_1b"
fi

failed=0
step() {  # step NAME SECONDS CMD...: run it under a time limit, keep its output, exit status and wall time
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s.%N)
  echo "== $name (limit ${limit} s): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 12 "$OUT/$name.log"
  echo "{\"rc\": $rc, \"seconds\": $(awk "BEGIN{print $(date +%s.%N) - $t0}")}" > "$OUT/$name.status.json"
  [ $rc = 0 ] || { echo "== $name failed (exit $rc); see $OUT/$name.log"; failed=1; }
}

# shellcheck disable=SC2086
step extract "${EXTRACT_LIMIT:-150}" "$PY" benchmarks/extract_features.py $EF --json "$OUT/extract.json"
# shellcheck disable=SC2086
step peers "${PEERS_LIMIT:-180}" "$PY" benchmarks/peers.py $PEERS --data-root "$DATA_ROOT" --json "$OUT/peers.json"
step datastore_torchrun "${RUN_LIMIT:-120}" "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 run.py "$RUN" \
  "stages=[prepare,warmup,datastore]" logger=none "data.root=$DATA_ROOT" "hydra.run.dir=$OUT/run"

"$PY" - "$OUT" "$DRY" <<'EOF'
import json, platform, subprocess, sys
from pathlib import Path

out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
def read(name):
    p = out / name
    return json.loads(p.read_text()) if p.is_file() else None
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    gpu = None
run = read("run/results.json")
summary = {
    "dry": dry, "gpu": gpu, "host": platform.node(),
    "extract": {**(read("extract.status.json") or {}), "figures": read("extract.json")},
    "peers": {**(read("peers.status.json") or {}), "figures": read("peers.json")},
    "datastore_torchrun": {**(read("datastore_torchrun.status.json") or {}),
                           "stages": run and {k: {"seconds": v.get("seconds"), "cached": v.get("cached")}
                                              for k, v in run.get("stages", {}).items()}},
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(f"summary: {out / 'gpu_check.json'}")
EOF
exit $failed

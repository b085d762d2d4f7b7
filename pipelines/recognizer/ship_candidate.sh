#!/bin/bash
# Ship a fine-tuned dlib-family recognizer ONNX as models/recognizer/NAME.onnx: register it in models/manifest.yaml
# (the dlib source entry's fields, this file's checksum) as the default recognizer, calibrate its match thresholds
# (flip-averaged and single chip) and write them into the entry.
# Usage: pipelines/recognizer/ship_candidate.sh MODEL.onnx NAME "SOURCE TEXT"
set -euo pipefail
cd "$(dirname "$0")/../.."
M=$1; NAME=$2; SRC=$3; O=work/recognizer/lfw_det480; C=$O/calib_detcache
cp "$M" "models/recognizer/$NAME.onnx"
.venv/bin/python - "$NAME" "$SRC" <<'PY'
import sys, yaml
name, src = sys.argv[1], sys.argv[2]
base = dict(yaml.safe_load(open("models/manifest.yaml"))["models"]["dlib-resnet-v1"])
for k in ("file", "sha256", "size_bytes", "kind", "match_threshold", "match_threshold_source",
          "match_threshold_flip_average", "match_threshold_flip_average_source"):
    base.pop(k, None)
base.update({"source": src, "card": f"recognizer/{name}.md", "weights": "fp16 initializers, computed in fp32 (Cast nodes)"})
yaml.safe_dump(base, open(f"work/recognizer/{name}_meta.yaml", "w"), sort_keys=False)
PY
.venv/bin/python -m pipelines.manifest add --name "$NAME" --kind recognizer --file "recognizer/$NAME.onnx" --meta "work/recognizer/${NAME}_meta.yaml" --default
for mode in flip single; do
  flag=""; [ $mode = single ] && flag="--no-flip-average"
  .venv/bin/python -m pipelines.recognizer.calibrate --people 1000 --model "models/recognizer/$NAME.onnx" $flag --detections-cache $C --json "$O/calib_${NAME}_$mode.json" 2>/dev/null | grep -v "^$"
done
.venv/bin/python -m pipelines.manifest thresholds --name "$NAME" --flip "$O/calib_${NAME}_flip.json" --single "$O/calib_${NAME}_single.json"

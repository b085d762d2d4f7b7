#!/bin/bash
# Ship a fine-tuned recognizer ONNX as models/recognizer/NAME.onnx: calibrate (flip and single chip) and register
# it in models/manifest.yaml as the default recognizer. Usage: pipelines/recognizer/ship_candidate.sh MODEL.onnx NAME "SOURCE TEXT"
set -euo pipefail
cd "$(dirname "$0")/../.."
M=$1; NAME=$2; SRC=$3; O=work/recognizer/lfw_det480; C=$O/calib_detcache
cp $M models/recognizer/$NAME.onnx
for mode in flip single; do
  flag=""; [ $mode = single ] && flag="--no-flip-average"
  .venv/bin/python -m pipelines.recognizer.calibrate --people 1000 --model models/recognizer/$NAME.onnx $flag --detections-cache $C --json $O/calib_${NAME}_$mode.json 2>/dev/null | grep -v "^$"
done
.venv/bin/python - "$NAME" "$SRC" <<'PY'
import json, sys, yaml
name, src = sys.argv[1], sys.argv[2]
man = yaml.safe_load(open("models/manifest.yaml"))
base = dict(man["models"]["dlib-resnet-v1"])
for k in ("file", "sha256", "size_bytes", "kind"):
    base.pop(k)
def thr(mode):
    d = json.load(open(f"work/recognizer/lfw_det480/calib_{name}_{mode}.json"))
    rows = {r["far"]: r for r in d["thresholds"]}
    return rows[1e-4]["threshold"], rows
def text(mode, rows, cmd):
    r3, r4, r5 = rows[1e-3], rows[1e-4], rows[1e-5]
    return (f"cosine at FAR 1e-4 (TAR {r4['tar']:.3f}) over 1,660,120 LFW impostor pairs through vigil's own detector "
            f"(vigil-face-n-cpu480 ONNX, 480), aligner and the template above, {mode}: {cmd} "
            f"(FAR 1e-3: {r3['threshold']:.3f}, TAR {r3['tar']:.3f}; FAR 1e-5: {r5['threshold']:.3f}, TAR {r5['tar']:.3f})")
cal = f"python -m pipelines.recognizer.calibrate --people 1000 --model models/recognizer/{name}.onnx"
cache = "--detections-cache work/recognizer/lfw_det480/calib_detcache"
t1, rows1 = thr("single"); tf, rowsf = thr("flip")
base.update({
    "source": src, "card": f"recognizer/{name}.md", "weights": "fp16 initializers, computed in fp32 (Cast nodes)",
    "match_threshold": round(t1, 4),
    "match_threshold_source": text("one chip per face", rows1, f"{cal} --no-flip-average {cache} --json work/recognizer/lfw_det480/calib_{name}_single.json"),
    "match_threshold_flip_average": round(tf, 4),
    "match_threshold_flip_average_source": text("each face embedded with its mirror image (the runtime default)", rowsf, f"{cal} {cache} --json work/recognizer/lfw_det480/calib_{name}_flip.json"),
})
yaml.safe_dump(base, open(f"work/recognizer/{name}_meta.yaml", "w"), sort_keys=False)
print("thresholds single", t1, "flip", tf)
PY
.venv/bin/python -m pipelines.manifest add --name $NAME --kind recognizer --file recognizer/$NAME.onnx --meta work/recognizer/${NAME}_meta.yaml --default

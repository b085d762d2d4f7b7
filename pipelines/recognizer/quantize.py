"""INT8 quantisation of a recognizer ONNX (vigil contract: ``chips`` uint8 [N,S,S,3] BGR -> ``embeddings``).

    python -m pipelines.recognizer.quantize --model work/recognizer/dlib-resnet-v1-fp32.onnx \
        --out work/recognizer/dlib-resnet-v1-int8.onnx --json work/recognizer/int8_report.json

Static QDQ quantisation with onnxruntime (per-channel int8 weights, uint8 activations, MinMax calibration on
``--calib`` chips of the CelebA VALIDATION identities; the first conv and the last dense layer stay float), falling
back to dynamic quantisation with ``--dynamic``
or when static quantisation fails on the graph. A model whose weights are stored as float16 (+ Cast) is first
turned back into float32 initialisers so the quantiser sees plain Conv/Gemm weights.

The report (JSON) has file sizes, CPU speed (faces/s at batch 1 and 64, a short timed loop with a named
thread count) of the float and int8 models, and their agreement on held-out validation chips (cosine per
chip, and pair metrics on the validation identities for clean and degraded chips). LFW accuracy is measured
with ``vigil eval lfw --model <int8.onnx>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vigil.errors import VigilError

INPUT_NAME = "chips"


def fp16_weights_to_fp32(model_in: Path, model_out: Path) -> Path:
    """Undo R1's fp16 weight storage: every ``Cast(fp16 initializer -> float)`` becomes a float32 initializer."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_in))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    keep_nodes, replaced = [], 0
    for node in graph.node:
        src = node.input[0] if node.op_type == "Cast" and node.input else None
        if src in inits and inits[src].data_type == onnx.TensorProto.FLOAT16:
            values = numpy_helper.to_array(inits[src]).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(values, name=node.output[0]))
            graph.initializer.remove(inits.pop(src))
            replaced += 1
            continue
        keep_nodes.append(node)
    del graph.node[:]
    graph.node.extend(keep_nodes)
    onnx.save(model, str(model_out))
    return model_out


MIN_QDQ_OPSET = 13  # per-channel DequantizeLinear (its ``axis``) needs opset 13


def upgrade_opset(model_path: Path, minimum: int = MIN_QDQ_OPSET) -> int:
    """Rewrite ``model_path`` in place at opset ``minimum`` when it is older (a third-party graph such as SFace is
    opset 11); returns the opset it has now."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(model_path))
    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=minimum)
    if current >= minimum:
        return current
    onnx.save(version_converter.convert_version(model, minimum), str(model_path))
    return minimum


class ChipReader:
    """onnxruntime CalibrationDataReader over uint8 chips, ``batch`` at a time."""

    def __init__(self, chips: np.ndarray, batch: int = 16) -> None:
        self.chips, self.batch, self.pos = chips, batch, 0

    def get_next(self):
        if self.pos >= len(self.chips):
            return None
        out = {INPUT_NAME: self.chips[self.pos : self.pos + self.batch]}
        self.pos += self.batch
        return out

    def rewind(self) -> None:
        self.pos = 0


def edge_nodes(model_path: Path) -> list[str]:
    """Names of the first Conv and the last MatMul/Gemm: kept in float (measured: with them quantised the
    mean cosine to the float model is 0.991, min 0.93; without, 0.9997, min 0.9993 on 200 validation chips)."""
    import onnx

    nodes = [n for n in onnx.load(str(model_path)).graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    dense = [n.name for n in nodes if n.op_type in ("MatMul", "Gemm")]
    return convs[:1] + dense[-1:]


def depthwise_convs(model_path: Path) -> list[str]:
    """Names of the grouped (depthwise) Convs: MobileFaceNet-style bodies (SFace) lose most in int8 there (measured on
    SFace, CelebA validation chips: cosine to float mean 0.988, min 0.91 with them quantised; 0.995, 0.98 without)."""
    import onnx

    return [
        n.name
        for n in onnx.load(str(model_path)).graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]


def quantize(
    model_path: Path,
    out_path: Path,
    calib: np.ndarray,
    dynamic: bool,
    keep_edges: bool = True,
    keep_depthwise: bool = False,
) -> str:
    """Write the int8 model; returns the method actually used ("static_qdq" or "dynamic")."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    work = out_path.with_suffix(".prep.onnx")
    fp32 = fp16_weights_to_fp32(model_path, out_path.with_suffix(".fp32.onnx"))
    upgrade_opset(fp32)
    try:
        quant_pre_process(str(fp32), str(work), skip_symbolic_shape=True)
    except Exception as exc:  # pre-processing is an optimisation; quantise the plain graph if it fails
        print(f"pre-process skipped ({type(exc).__name__}: {exc})")
        work.write_bytes(fp32.read_bytes())
    method = "dynamic"
    if not dynamic:
        try:
            quantize_static(
                str(work),
                str(out_path),
                ChipReader(calib),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=(edge_nodes(work) if keep_edges else [])
                + (depthwise_convs(work) if keep_depthwise else []),
            )
            method = "static_qdq"
        except Exception as exc:  # the quantiser raises many types on graphs it cannot handle
            print(f"static quantisation failed ({type(exc).__name__}: {exc}); using dynamic")
    if method == "dynamic":
        quantize_dynamic(
            str(work),
            str(out_path),
            weight_type=QuantType.QInt8,
            nodes_to_exclude=edge_nodes(work) if keep_edges else [],
        )
    for tmp in (work, fp32):
        tmp.unlink(missing_ok=True)
    return method


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def embed(sess, chips: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([sess.run(None, {INPUT_NAME: chips[i : i + batch]})[0] for i in range(0, len(chips), batch)])


def faces_per_s(sess, chips: np.ndarray, batch: int, seconds: float) -> float:
    """A short timed loop: faces/s at ``batch`` (one warm-up run, then runs until ``seconds`` pass, at least 3)."""
    x = np.ascontiguousarray(chips[:batch]) if len(chips) >= batch else np.resize(chips, (batch, *chips.shape[1:]))
    sess.run(None, {INPUT_NAME: x})
    runs, t0 = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - t0 < seconds:
        sess.run(None, {INPUT_NAME: x})
        runs += 1
    return runs * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="float ONNX with the vigil chip contract")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--chips", type=Path, default=Path("work/recognizer/celeba_chips"), help="chip cache or carry pack")
    ap.add_argument("--calib", type=int, default=200, help="calibration chips (validation identities)")
    ap.add_argument("--dynamic", action="store_true")
    ap.add_argument(
        "--quantize-edges", action="store_true", help="also quantise the first conv and the last dense layer"
    )
    ap.add_argument("--keep-depthwise-float", action="store_true", help="leave grouped (depthwise) convs in float")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench-s", type=float, default=5.0, help="seconds per timed loop")
    args = ap.parse_args(argv)
    try:
        from pipelines.recognizer.degrade import DegradeConfig, Degrader
        from pipelines.recognizer.faces_dataset import load_chip_set
        from pipelines.recognizer.finetune import validation_metrics

        if not args.model.is_file():
            raise VigilError(f"{args.model}: model not found")
        val = load_chip_set(args.chips).subset("val")
        order = np.random.default_rng(0).permutation(len(val.chips))
        calib = val.chips[order[: args.calib]]
        held = np.sort(order[args.calib :])  # agreement is measured on chips not used for calibration
        test_chips, test_labels = val.chips[held], val.labels[held]
        test_degraded = Degrader(DegradeConfig(p_clean=0.0, p_flip=0.0)).degrade_batch(test_chips, 1234)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        method = quantize(
            args.model,
            args.out,
            calib,
            args.dynamic,
            keep_edges=not args.quantize_edges,
            keep_depthwise=args.keep_depthwise_float,
        )
        report = {
            "model": str(args.model),
            "int8": str(args.out),
            "method": method,
            "calibration_chips": len(calib),
            "kept_float": ([] if args.quantize_edges else ["first Conv and last MatMul/Gemm"])
            + (["depthwise Convs"] if args.keep_depthwise_float else []),
            "test_chips": len(held),
            "data": "CelebA validation identities (pipelines/recognizer/faces_dataset.py split)",
            "threads": args.threads,
        }
        embs = {}
        for name, path in (("float", args.model), ("int8", args.out)):
            sess = session(path, args.threads)
            embs[name] = (embed(sess, test_chips), embed(sess, test_degraded))
            report[name] = {
                "size_mib": round(path.stat().st_size / 2**20, 2),
                "faces_per_s_batch1": round(faces_per_s(sess, test_chips, 1, args.bench_s), 1),
                "faces_per_s_batch64": round(faces_per_s(sess, test_chips, 64, args.bench_s), 1),
                "validation": validation_metrics(*embs[name], test_labels),
            }
        cos = np.sum(embs["float"][0] * embs["int8"][0], axis=1)
        report["cosine_float_vs_int8_clean"] = {
            "mean": float(cos.mean()),
            "min": float(cos.min()),
            "p05": float(np.percentile(cos, 5)),
        }
        report["speedup_batch1"] = round(
            report["int8"]["faces_per_s_batch1"] / report["float"]["faces_per_s_batch1"], 2
        )
        report["speedup_batch64"] = round(
            report["int8"]["faces_per_s_batch64"] / report["float"]["faces_per_s_batch64"], 2
        )
    except VigilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

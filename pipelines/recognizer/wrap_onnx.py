"""Wrap a third-party face-embedding ONNX into vigil's recognizer contract.

    python -m pipelines.recognizer.wrap_onnx --model face_recognition_sface_2021dec.onnx \
        --out models/recognizer/sface-2021dec.onnx --rgb [--mean 0 --std 1] [--fp16-weights]

vigil's contract (vigil.embed.OnnxEmbedder, models/manifest.yaml): one input ``chips`` uint8 [N, S, S, 3] BGR,
one output ``embeddings`` float32 [N, D], L2-normalised, dynamic batch. Typical public models take float NCHW
RGB with a fixed batch of 1 and return raw vectors, so the wrapper adds in front ``Cast -> Transpose to NCHW ->
(BGR->RGB) -> (x - mean) / std`` and behind ``LpNormalization``, and makes the batch dimension symbolic.
``--fp16-weights`` stores float initialisers as float16 with a Cast back to float32 (half the file, computed in
fp32, the same scheme as the converted dlib models); ``--int8-matrices`` stores the big fully connected weights as
int8 with a float scale per row (``convert.matrices_to_int8``; SFace's 50,176 x 128 FC is two thirds of its
weights). Check parity with ``--check`` (random chips) and on real faces with ``vigil eval lfw``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from vigil.errors import VigilError

INPUT_NAME = "chips"
OUTPUT_NAME = "embeddings"
BATCH_DIM = "batch"


def _single_data_input(graph):
    """The model's real input: the one graph input that is not an initializer (old IRs list weights as inputs)."""
    weights = {i.name for i in graph.initializer}
    data = [i for i in graph.input if i.name not in weights]
    if len(data) != 1:
        raise VigilError(f"expected one data input, got {[i.name for i in data]}")
    dims = [d.dim_value for d in data[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or dims[2] != dims[3] or dims[2] <= 0:
        raise VigilError(f"input {data[0].name}: expected [N, 3, S, S], got {dims}")
    return data[0], dims[2]


def _prefix_nodes(source_input: str, rgb: bool, mean: float, std: float):
    """uint8 NHWC BGR ``chips`` -> the float NCHW tensor the source model takes (``source_input``)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["wrap_float"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["wrap_float"], ["wrap_nchw"], perm=[0, 3, 1, 2]),
    ]
    inits = []
    current = "wrap_nchw"
    if rgb:
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "wrap_bgr_to_rgb"))
        nodes.append(helper.make_node("Gather", [current, "wrap_bgr_to_rgb"], ["wrap_rgb"], axis=1))
        current = "wrap_rgb"
    if mean != 0.0 or std != 1.0:
        inits += [
            numpy_helper.from_array(np.array(mean, np.float32), "wrap_mean"),
            numpy_helper.from_array(np.array(1.0 / std, np.float32), "wrap_inv_std"),
        ]
        nodes += [
            helper.make_node("Sub", [current, "wrap_mean"], ["wrap_centred"]),
            helper.make_node("Mul", ["wrap_centred", "wrap_inv_std"], ["wrap_scaled"]),
        ]
        current = "wrap_scaled"
    nodes.append(helper.make_node("Identity", [current], [source_input]))
    return nodes, inits


def wrap(
    model_in: Path,
    model_out: Path,
    rgb: bool,
    mean: float = 0.0,
    std: float = 1.0,
    fp16_weights: bool = False,
    int8_matrices: bool = False,
):
    """Write the wrapped model; returns (chip size S, embedding size D)."""
    import onnx
    from onnx import TensorProto, helper

    from pipelines.recognizer.convert import matrices_to_int8, weights_to_fp16

    model = onnx.load(str(model_in))
    graph = model.graph
    data, size = _single_data_input(graph)
    if len(graph.output) != 1:
        raise VigilError(f"{model_in}: expected one output, got {[o.name for o in graph.output]}")
    raw_output = graph.output[0].name
    weights = {i.name for i in graph.initializer}
    kept_inputs = [i for i in graph.input if i.name != data.name and i.name not in weights]
    prefix, prefix_inits = _prefix_nodes(data.name, rgb, mean, std)
    normalise = helper.make_node("LpNormalization", [raw_output], [OUTPUT_NAME], axis=1, p=2)
    nodes = prefix + list(graph.node) + [normalise]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(prefix_inits)
    del graph.input[:]
    graph.input.extend(
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [BATCH_DIM, size, size, 3])] + kept_inputs
    )
    dim = graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, dim])])
    del graph.value_info[:]  # shapes inferred for batch 1 would contradict the symbolic batch
    if int8_matrices:
        matrices_to_int8(model)  # first: the big FC weights as int8 + row scales; fp16 then takes the rest
    if fp16_weights:
        weights_to_fp16(model)  # the converter's: the same fp16-with-Cast storage as every shipped model
    onnx.checker.check_model(model)
    model_out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(model_out))
    return size, dim


def reference_embeddings(model_in: Path, chips_bgr: np.ndarray, rgb: bool, mean: float, std: float) -> np.ndarray:
    """The source model run one chip at a time with the preprocessing done in numpy: the wrapper's ground truth."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # old exporters list weights as inputs: one warning per weight otherwise
    session = ort.InferenceSession(str(model_in), options, providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in session.get_inputs()}
    name = next(iter(graph_inputs))
    out = []
    for chip in chips_bgr:
        x = chip[..., ::-1] if rgb else chip
        x = (x.astype(np.float32).transpose(2, 0, 1)[None] - mean) / std
        out.append(session.run(None, {name: x})[0][0])
    vectors = np.asarray(out, np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="source ONNX: float [N|1, 3, S, S] -> [N|1, D]")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rgb", action="store_true", help="the source model takes RGB (vigil chips are BGR)")
    ap.add_argument("--mean", type=float, default=0.0, help="subtracted from 0-255 pixels (0: the model does it)")
    ap.add_argument("--std", type=float, default=1.0, help="pixels are divided by this after --mean")
    ap.add_argument("--fp16-weights", action="store_true", help="store weights as float16 (computed in float32)")
    ap.add_argument(
        "--int8-matrices",
        action="store_true",
        help="store big fully connected weights as int8 with a scale per row (computed in float32)",
    )
    ap.add_argument("--check", type=int, default=16, help="random chips to compare against the source model (0: skip)")
    args = ap.parse_args(argv)
    try:
        if not args.model.is_file():
            raise VigilError(f"{args.model}: model file not found")
        size, dim = wrap(args.model, args.out, args.rgb, args.mean, args.std, args.fp16_weights, args.int8_matrices)
        print(f"{args.out}: chips uint8 [N,{size},{size},3] BGR -> embeddings [N,{dim}] (L2-normalised)")
        if args.check:
            from vigil.embed import OnnxEmbedder

            chips = np.random.default_rng(0).integers(0, 256, (args.check, size, size, 3), dtype=np.uint8)
            ours = OnnxEmbedder(args.out, providers=["CPUExecutionProvider"], batch_size=8).embed(chips)
            ref = reference_embeddings(args.model, chips, args.rgb, args.mean, args.std)
            cosine = np.sum(ours * ref, axis=1)
            print(f"parity with the source model on {args.check} random chips (batch 8): cosine min {cosine.min():.6f}")
    except VigilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

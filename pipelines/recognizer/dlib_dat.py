"""Reader for dlib's serialized DNN files (``*.dat`` written by ``dlib::serialize(net)``).

Only what the face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) needs is supported:
``loss_metric``, ``input_rgb_image_sized``, ``con_``, ``affine_``, ``relu_``, ``max_pool_``, ``avg_pool_``,
``add_prev_`` and ``fc_`` layers, with ``tag``/``skip`` wrappers.

The format (dlib/serialize.h, dlib/dnn/core.h, dlib/dnn/layers.h, dlib/cuda/tensor.h):

* integers are "compact": one header byte (low nibble = number of payload bytes, bit 0x80 = negative) then the
  magnitude little-endian; ``bool`` is one ASCII byte ``'0'``/``'1'``; a string is a compact length then bytes;
  a ``double``/``float`` (outside tensors) is a compact int64 mantissa then a compact int16 exponent (value =
  mantissa * 2**exponent);
* a tensor is version 2, num_samples, k, nr, nc, then ``num_samples*k*nr*nc`` little-endian IEEE float32;
  an alias tensor (a view into a layer's params) is version 1, num_samples, k, nr, nc;
* the network nests: ``add_loss_layer`` writes version 1, the loss details, then its subnetwork; every
  ``add_layer`` writes version 2, its subnetwork, its layer details, 3 bools and 3 tensors (x_grad,
  cached_output, params_grad); ``add_tag_layer``/``add_skip_layer`` write version 1 and their subnetwork;
  the bottom ``add_layer`` (the one holding the input layer) writes version 3, the input layer, its layer
  details, 3 bools, 3 tensors and the sample expansion factor. So the file is: loss, the versions of all
  wrappers top-down, then the layer details bottom-up, i.e. in forward order.
"""

from __future__ import annotations

import builtins
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vigil.errors import ModelError

SOURCE_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_5_FILE = "shape_predictor_5_face_landmarks.dat"

_ADD_LAYER_VERSION = 2
_WRAPPER_VERSION = 1  # add_tag_layer / add_skip_layer
_INPUT_ADD_LAYER_VERSION = 3


def face_recognition_models_file(name: str) -> Path:
    """Path of a file shipped in the ``face_recognition_models`` PyPI package (``models/<name>``).

    Located with importlib rather than by importing the package: its ``__init__`` needs ``pkg_resources``,
    which recent setuptools no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{name}: the PyPI package face_recognition_models is not installed (pip install it)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise ModelError(f"{path}: not found in the face_recognition_models package")
    return path


@dataclass
class DlibLayer:
    """One computational layer in forward order.

    kind: "con", "affine", "relu", "max_pool", "avg_pool", "add_prev" or "fc".
    attrs: integer settings (num_filters, nr, nc, stride_y, stride_x, padding_y, padding_x, num_outputs ...).
    arrays: parameters; con: weight (O, I, kh, kw) and bias (O,); affine: gamma (C,), beta (C,);
      fc: weight (num_outputs, num_inputs) as torch's Linear stores it, bias when present.
    """

    kind: str
    attrs: dict[str, int] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """The parsed network: input settings and the layers in forward order."""

    input_kind: str
    input_mean_rgb: tuple[float, float, float]  # subtracted from R, G, B (0..255) before dividing by 256
    input_size: tuple[int, int]  # rows, cols
    layers: list[DlibLayer]
    loss_kind: str

    def named_arrays(self) -> dict[str, np.ndarray]:
        """All parameters as ``"<index:03d>_<kind>.<name>"`` -> array (index = position in ``layers``)."""
        out: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            for name, arr in layer.arrays.items():
                out[f"{i:03d}_{layer.kind}.{name}"] = arr
        return out


class _Reader:
    """Sequential reader over the file's bytes; every read checks bounds and raises ModelError."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.path}: not a dlib network file this reader understands ({what} at byte {self.pos})")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("unexpected end of file")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        header = self.take(1)[0]
        size = header & 0x0F
        if size > 8 or (header & 0x70):
            raise self.fail(f"bad integer header 0x{header:02x}")
        value = int.from_bytes(self.take(size), "little") if size else 0
        return -value if header & 0x80 else value

    def bool(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise self.fail(f"bad bool {char!r}")
        return char == b"1"

    def string(self) -> str:
        length = self.int()
        if not 0 <= length <= 256:
            raise self.fail(f"bad string length {length}")
        try:
            return self.take(length).decode("ascii")
        except UnicodeDecodeError as exc:
            raise self.fail("non-ASCII string") from exc

    def real(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0**exponent

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:  # int: the method
        version = self.int()
        if version != 1:
            raise self.fail(f"alias_tensor version {version}")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


def _read_con(r: _Reader, version: str) -> DlibLayer:
    params = r.tensor().reshape(-1)
    attrs = {k: r.int() for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
    filters = r.alias_tensor()
    biases = r.alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.real()
    use_bias = r.bool() if version == "con_5" else True
    n_filters = int(np.prod(filters))
    weight = params[:n_filters].reshape(filters)
    arrays: dict[str, np.ndarray] = {"weight": weight}
    if use_bias:
        bias = params[n_filters : n_filters + int(np.prod(biases))]
        arrays["bias"] = bias.reshape(-1)
    if params.size != n_filters + (int(np.prod(biases)) if use_bias else 0):
        raise r.fail("con_ params size does not match its filters and biases")
    return DlibLayer("con", attrs, arrays)


def _read_affine(r: _Reader) -> DlibLayer:
    params = r.tensor().reshape(-1)
    gamma = r.alias_tensor()
    beta = r.alias_tensor()
    mode = r.int()
    n = int(np.prod(gamma))
    if int(np.prod(beta)) != n or params.size != 2 * n:
        raise r.fail("affine_ params size does not match gamma and beta")
    return DlibLayer("affine", {"mode": mode}, {"gamma": params[:n].copy(), "beta": params[n:].copy()})


def _read_pool(r: _Reader, kind: str) -> DlibLayer:
    attrs = {k: r.int() for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
    return DlibLayer(kind, attrs)


def _read_fc(r: _Reader) -> DlibLayer:
    num_outputs = r.int()
    num_inputs = r.int()
    params = r.tensor().reshape(-1)
    weights = r.alias_tensor()
    biases = r.alias_tensor()
    bias_mode = r.int()  # 0 = has bias, 1 = no bias
    for _ in range(4):
        r.real()
    n_w = num_inputs * num_outputs
    if int(np.prod(weights)) != n_w:
        raise r.fail("fc_ weights size does not match num_inputs x num_outputs")
    # dlib computes out = x (1 x num_inputs) * W (num_inputs x num_outputs); torch stores W transposed.
    arrays = {"weight": params[:n_w].reshape(num_inputs, num_outputs).T.copy()}
    if bias_mode == 0:
        arrays["bias"] = params[n_w : n_w + int(np.prod(biases))].copy()
    return DlibLayer("fc", {"num_outputs": num_outputs, "num_inputs": num_inputs, "bias_mode": bias_mode}, arrays)


def _read_layer_details(r: _Reader) -> DlibLayer:
    name = r.string()
    if name in ("con_4", "con_5"):
        return _read_con(r, name)
    if name == "affine_":
        return _read_affine(r)
    if name == "relu_":
        return DlibLayer("relu")
    if name == "max_pool_2":
        return _read_pool(r, "max_pool")
    if name == "avg_pool_2":
        return _read_pool(r, "avg_pool")
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name == "fc_2":
        return _read_fc(r)
    raise r.fail(f"unsupported layer {name!r}")


def _read_add_layer_tail(r: _Reader, n_tensors: int) -> None:
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output..._disabled
        r.bool()
    for _ in range(n_tensors):  # x_grad, cached_output, params_grad (or grad_final)
        r.tensor()


def read_dlib_dat(path: Path) -> DlibNet:
    """Parse a dlib metric-learning network file into a DlibNet (layers in forward order)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    r = _Reader(data, path)
    if r.int() != 1:
        raise r.fail("add_loss_layer version")
    loss_kind = r.string()
    if loss_kind != "loss_metric_2":
        raise r.fail(f"unsupported loss {loss_kind!r}")
    r.real(), r.real()  # margin, distance threshold
    wrapper_versions: list[int] = []
    while True:
        version = r.int()
        if version == _INPUT_ADD_LAYER_VERSION:
            break
        if version not in (_ADD_LAYER_VERSION, _WRAPPER_VERSION):
            raise r.fail(f"layer wrapper version {version}")
        wrapper_versions.append(version)
    input_kind = r.string()
    if input_kind != "input_rgb_image_sized":
        raise r.fail(f"unsupported input layer {input_kind!r}")
    mean_rgb = (r.real(), r.real(), r.real())
    input_size = (r.int(), r.int())
    layers = [_read_layer_details(r)]
    _read_add_layer_tail(r, 3)
    r.int()  # sample expansion factor
    for _ in range(wrapper_versions.count(_ADD_LAYER_VERSION)):
        layers.append(_read_layer_details(r))
        _read_add_layer_tail(r, 3)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} trailing bytes")
    return DlibNet(input_kind, mean_rgb, input_size, layers, loss_kind)

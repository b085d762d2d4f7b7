"""Config validation: a table of bad inputs and the one-line message each must give."""

from __future__ import annotations

import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from vigil.config import VigilConfig, load_config
from vigil.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_example_config_is_valid():
    config = load_config(REPO / "config.yaml")
    assert config.cameras, "the example config should show at least one camera"
    assert config.rules.confirm_hits >= config.rules.min_hits


def test_defaults_work_out_of_the_box(tmp_path):
    config = load_config(write(tmp_path, "cameras: []\n"))
    assert config.detector.imgsz is None  # the model's own input size from the manifest
    assert config.rules.match_threshold is None  # taken from the recognizer's calibration
    assert config.reconnect.max_backoff_s <= 5.0  # a camera that comes back is reconnected within 5 s


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"")  # a camera file must exist at load
    config = load_config(write(tmp_path, "watchlist: people.yaml\ncameras:\n  - {name: door, source: clips/a.mp4}\n"))
    assert config.watchlist == tmp_path / "people.yaml"
    assert config.cameras[0].source == str(tmp_path / "clips/a.mp4")
    assert config.data_dir == tmp_path / "vigil-data"


def test_network_sources_and_device_indices_are_kept(tmp_path):
    text = "cameras:\n  - {name: a, source: 'rtsp://u:p@10.0.0.1/s'}\n  - {name: b, source: 0}\n"
    config = load_config(write(tmp_path, text))
    assert config.cameras[0].source == "rtsp://u:p@10.0.0.1/s"
    assert config.cameras[1].source == 0


def test_tiling_is_off_by_default_and_takes_tile_size_and_overlap(tmp_path):
    from vigil.detect import tile_spec
    from vigil.tiling import TileSpec

    assert load_config(write(tmp_path, "cameras: []\n")).detector.tiling is None
    config = load_config(write(tmp_path, "detector:\n  tiling: {tile_px: 640}\n"))
    assert tile_spec(config.detector.tiling) == TileSpec(tile_px=640, overlap_px=128)
    assert tile_spec(None) is None


BAD_CONFIGS = [
    ("unknown top-level key", "camras: []\n", "camras: unknown key"),
    ("unknown nested key", "rules:\n  treshold: 0.4\n", "rules.treshold: unknown key"),
    ("wrong type", "detector:\n  imgsz: big\n", "detector.imgsz"),
    ("out of range", "rules:\n  match_threshold: 1.5\n", "rules.match_threshold"),
    ("negative fps", "cameras:\n  - {name: a, source: x.mp4, fps_cap: -1}\n", "cameras[0].fps_cap"),
    ("missing source", "cameras:\n  - {name: a}\n", "cameras[0].source: Field required"),
    ("bad camera name", "cameras:\n  - {name: 'a b', source: x.mp4}\n", "cameras[0].name"),
    ("duplicate cameras", "cameras:\n  - {name: a, source: x}\n  - {name: a, source: y}\n", "repeated: a"),
    ("re-embed interval of zero", "recognizer:\n  reembed_interval_frames: 0\n", "recognizer.reembed_interval_frames"),
    ("imgsz not multiple of 32", "detector:\n  imgsz: 500\n", "detector.imgsz"),
    (
        "tiles overlapping more than half",
        "detector:\n  tiling: {tile_px: 480, overlap_px: 300}\n",
        "detector.tiling: Value error, overlap_px (300) must be at most half",
    ),
    ("tile too small", "detector:\n  tiling: {tile_px: 32}\n", "detector.tiling.tile_px"),
    (
        "tiling without a tile size",
        "detector:\n  tiling: {overlap_px: 64}\n",
        "detector.tiling.tile_px: Field required",
    ),
    (
        "unknown tiling key",
        "detector:\n  tiling: {tile_px: 480, overlap: 64}\n",
        "detector.tiling.overlap: unknown key",
    ),
    ("refine flag not a boolean", "detector:\n  refine_landmarks: maybe\n", "detector.refine_landmarks"),
    ("confirm before provisional", "rules:\n  min_hits: 5\n  confirm_hits: 2\n", "confirm_hits must be >= min_hits"),
    (
        "zone with two points",
        "cameras:\n  - {name: a, source: x, zones: [{name: z, points_norm: [[0,0],[1,1]]}]}\n",
        "cameras[0].zones[0].points_norm",
    ),
    (
        "zone outside the frame",
        "cameras:\n  - {name: a, source: x, zones: [{name: z, points_norm: [[0,0],[2,0],[1,1]]}]}\n",
        "cameras[0].zones[0].points_norm",
    ),
    (
        "bad weekday",
        "cameras:\n  - {name: a, source: x, schedule: [{days: [funday]}]}\n",
        "cameras[0].schedule[0].days[0]",
    ),
    ("webhook not http", "alerts:\n  webhook: {url: 'ftp://x'}\n", "alerts.webhook.url"),
    ("mqtt without a host", "alerts:\n  mqtt: {port: 1883}\n", "alerts.mqtt.host: Field required"),
    (
        "mqtt wildcard in the prefix",
        "alerts:\n  mqtt: {host: b, topic_prefix: 'vigil/#'}\n",
        "alerts.mqtt.topic_prefix",
    ),
    (
        "mqtt prefix with an empty level",
        "alerts:\n  mqtt: {host: b, topic_prefix: 'a//b'}\n",
        "alerts.mqtt.topic_prefix",
    ),
    ("mqtt qos 3", "alerts:\n  mqtt: {host: b, qos: 3}\n", "alerts.mqtt.qos"),
    ("mqtt port out of range", "alerts:\n  mqtt: {host: b, port: 70000}\n", "alerts.mqtt.port"),
    ("mqtt password without a user", "alerts:\n  mqtt: {host: b, password: x}\n", "a password needs a username"),
    (
        "mqtt password twice",
        "alerts:\n  mqtt: {host: b, username: u, password: x, password_env: P}\n",
        "give password or password_env, not both",
    ),
    (
        "mqtt client certificate without its key",
        "alerts:\n  mqtt: {host: b, tls: {client_cert: {cert_file: c.pem}}}\n",
        "alerts.mqtt.tls.client_cert.key_file: Field required",
    ),
    (
        "mqtt unknown tls key",
        "alerts:\n  mqtt: {host: b, tls: {cafile: c.pem}}\n",
        "alerts.mqtt.tls.cafile: unknown key",
    ),
    (
        "backoff cap below start",
        "reconnect:\n  initial_backoff_s: 3\n  max_backoff_s: 1\n",
        "max_backoff_s must be >= initial_backoff_s",
    ),
    # sources that can never work are refused at load (issue 26, defect 8)
    (
        "rtsp without a host",
        "cameras:\n  - {name: a, source: 'rtsp://'}\n",
        "cameras[0].source: Value error, the URL has no host",
    ),
    (
        "port out of range",
        "cameras:\n  - {name: a, source: 'rtsp://h:99999/s'}\n",
        "port 99999 is out of range (1-65535)",
    ),
    ("port zero", "cameras:\n  - {name: a, source: 'rtsp://h:0/s'}\n", "port 0 is out of range"),
    ("port not a number", "cameras:\n  - {name: a, source: 'rtsp://h:x/s'}\n", "port 'x' is not a number"),
    ("rtps typo", "cameras:\n  - {name: a, source: 'rtps://h/s'}\n", "unknown URL scheme 'rtps' (expected rtsp"),
    ("one slash", "cameras:\n  - {name: a, source: 'rtsp:/h/s'}\n", "malformed URL: expected rtsp://host/"),
    ("missing camera file", "cameras:\n  - {name: a, source: gone.mp4}\n", "cameras[0].source: video file not found:"),
    ("camera file is a folder", "cameras:\n  - {name: a, source: .}\n", "cameras[0].source: is a folder"),
    (
        "missing sub-stream file",
        "cameras:\n  - {name: a, source: 0, detect_source: gone_small.mp4}\n",
        "cameras[0].detect_source: video file not found:",
    ),
    (
        "sub-stream file is a folder",
        "cameras:\n  - {name: a, source: 0, detect_source: .}\n",
        "cameras[0].detect_source: is a folder",
    ),
    ("frame age of zero", "cameras:\n  - {name: a, source: 0, max_frame_age_s: 0}\n", "cameras[0].max_frame_age_s"),
    (
        "auth backoff cap below start",
        "reconnect:\n  auth_initial_backoff_s: 60\n  auth_max_backoff_s: 10\n",
        "auth_max_backoff_s must be >= auth_initial_backoff_s",
    ),
    # data_dir an existing file (defect 6)
    ("data_dir is a file", "data_dir: config.yaml\n", "data_dir: "),
    # webhook settings (defects 11 and 13)
    (
        "webhook without host",
        "alerts:\n  webhook: {url: 'http:///hook'}\n",
        "alerts.webhook.url: Value error, the URL has no host",
    ),
    (
        "webhook header name",
        "alerts:\n  webhook: {url: 'http://h/x', headers: {'a b': c}}\n",
        "not a valid header name",
    ),
    ("webhook header newline", "alerts:\n  webhook: {url: 'http://h/x', headers: {X-A: \"b\\nc\"}}\n", "line break"),
    (
        "webhook reserved header",
        "alerts:\n  webhook: {url: 'http://h/x', headers: {Idempotency-Key: k}}\n",
        "set by vigil",
    ),
    (
        "two credentials",
        "alerts:\n  webhook: {url: 'http://u:p@h/x', headers: {Authorization: x}}\n",
        "both in the URL",
    ),
    ("short secret", "alerts:\n  webhook: {url: 'http://h/x', secret: abc}\n", "alerts.webhook.secret"),
    ("two secrets", "alerts:\n  webhook: {url: 'http://h/x', secret: 0123456789abcdef, secret_env: S}\n", "not both"),
    (
        "secret variable unset",
        "alerts:\n  webhook: {url: 'http://h/x', secret_env: VIGIL_TEST_UNSET_SECRET}\n",
        "VIGIL_TEST_UNSET_SECRET is not set",
    ),
    (
        "missing CA bundle",
        "alerts:\n  webhook: {url: 'https://h/x', ca_file: nope.pem}\n",
        "alerts.webhook.ca_file: file not found",
    ),
    ("data access", "data_access: public\n", "data_access"),
    ("not a mapping", "- a\n- b\n", "config must be a mapping"),
    ("invalid yaml", "cameras: [\n", "not valid YAML"),
]


@pytest.mark.parametrize("case, text, expected", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_gives_one_line_naming_file_and_key(tmp_path, case, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message


def test_missing_config_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("given, relative", [("work/recognizer/x", True), ("/abs/x", False)])
def test_repo_path_anchors_only_relative_paths(given, relative):
    from vigil.paths import repo_path, repo_root

    assert repo_path(given) == (repo_root() / given if relative else Path(given))


def path_fields(model: type[BaseModel], prefix: tuple = ()) -> list[tuple]:
    """Every ``Path`` field reachable from ``model``, as a key path (``0`` for the first item of a list)."""
    found = []
    for name, info in model.model_fields.items():
        for arg in _annotation_leaves(info.annotation):
            if arg is Path:
                found.append((*prefix, name))
            elif isinstance(arg, tuple):  # ("list", item type)
                found.extend(path_fields(arg[1], (*prefix, name, 0)) if _is_model(arg[1]) else [])
            elif _is_model(arg):
                found.extend(path_fields(arg, (*prefix, name)))
    return found


def _is_model(kind) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _annotation_leaves(annotation) -> list:
    """The types an annotation may hold: ``X | None`` -> [X, None]; ``list[M]`` -> [("list", M)]."""
    origin = get_origin(annotation)
    if origin is list:
        return [("list", get_args(annotation)[0])]
    if origin in (Union, UnionType):
        return [leaf for arg in get_args(annotation) for leaf in _annotation_leaves(arg)]
    if origin is Annotated:
        return _annotation_leaves(get_args(annotation)[0])
    return [annotation]


# required fields of the sections that hold a path field, so that a config naming only the path validates
REQUIRED_BESIDE = {
    "url": "http://127.0.0.1:9/hook",
    "name": "cam",
    "source": 0,
    "cert": "c.pem",
    "key": "k.pem",
    "host": "127.0.0.1",
    "cert_file": "client.pem",
    "key_file": "client.key",
}


def _config_setting(location: tuple, value: str) -> dict:
    """A config mapping that sets ``location`` to ``value`` (and only what validation needs beside it)."""
    node: object = value
    for key in reversed(location):
        node = [node] if key == 0 else {key: node}
    return node  # type: ignore[return-value]


def test_every_path_field_is_found_by_walking_the_config():
    found = path_fields(VigilConfig)
    expected = {
        ("data_dir",),
        ("watchlist",),
        ("detector", "model"),
        ("detector", "landmark_model"),
        ("recognizer", "model"),
        ("alerts", "jsonl", "path"),
        ("alerts", "mqtt", "tls", "ca_file"),
        ("alerts", "mqtt", "tls", "client_cert", "key_file"),
    }
    assert expected <= set(found)  # the walk really reaches nested and optional sections


@pytest.mark.parametrize("location", path_fields(VigilConfig), ids=lambda loc: ".".join(map(str, loc)))
def test_every_path_field_resolves_against_the_config_folder(tmp_path, location):
    """A relative path anywhere in the config is relative to the config file, not to the working directory."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    text = yaml.safe_dump(_fill_required(_config_setting(location, "given.file")))
    if location[-1] in CHECKED_AT_LOAD:
        (folder / "given.file").write_bytes(b"")
    config = load_config(write(folder, text))
    value: object = config
    for key in location:
        value = value[key] if isinstance(key, int) else getattr(value, key)  # type: ignore[index]
    assert value == folder / "given.file"


CHECKED_AT_LOAD = {"ca_file"}  # path fields whose file must exist when the config loads


def _fill_required(mapping: dict) -> dict:
    """Add REQUIRED_BESIDE's values to every nested section that lacks them and whose model requires them."""
    try:
        VigilConfig.model_validate(mapping)
        return mapping
    except ValidationError as exc:
        for error in exc.errors():
            if error["type"] == "missing" and error["loc"][-1] in REQUIRED_BESIDE:
                node = mapping
                for key in error["loc"][:-1]:
                    node = node[key]
                node[error["loc"][-1]] = REQUIRED_BESIDE[error["loc"][-1]]
        return mapping


def test_server_tls_paths_resolve_against_the_config_folder(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    config = load_config(write(folder, "server:\n  tls: {cert: certs/c.pem, key: /abs/k.pem}\n"))
    assert (config.server.tls.cert, config.server.tls.key) == (folder / "certs/c.pem", Path("/abs/k.pem"))


@pytest.mark.parametrize(
    "text, error",
    [
        ("server: {listen: 'nohost'}\n", "server.listen"),
        ("server: {listen: '127.0.0.1:70000'}\n", "out of range"),
        ("server: {tls: {cert: c.pem}}\n", "server.tls.key: Field required"),
        ("retention: {alerts_days: 0}\n", "retention.alerts_days"),
        ("server: {sse_queue: 5}\n", "server.sse_queue: unknown key"),
    ],
)
def test_service_settings_are_validated(tmp_path, text, error):
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_config(write(tmp_path, text))

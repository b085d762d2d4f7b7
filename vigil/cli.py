"""`vigil` command line: parse, call one function, print. Each command lives in its own module.

Every handler is ``run_cli(args: argparse.Namespace) -> int`` (the exit code), imported lazily so that
``vigil --help`` stays fast and a command's heavy dependencies load only when it runs. A
:class:`vigil.errors.VigilError` becomes one line on stderr and exit code 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from vigil.errors import VigilError

DEFAULT_CONFIG = Path("config.yaml")


def _handler(module: str):
    def call(args: argparse.Namespace) -> int:
        return importlib.import_module(module).run_cli(args)

    return call


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="watch every camera in the config until Ctrl-C or SIGTERM")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--watchlist", type=Path, help="overrides the config's watchlist")
    p.set_defaults(func=_handler("vigil.commands.run"))


def _add_process(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("process", help="process video files as fast as possible, no frame dropped")
    p.add_argument("videos", type=Path, nargs="+", metavar="VIDEO")
    p.add_argument("--watchlist", type=Path, required=True)
    p.add_argument("--config", type=Path, help="settings (detector, recognizer, rules...); cameras are ignored")
    p.add_argument("--events", type=Path, help="write alerts here, one JSON object per line")
    p.add_argument("--out-video", type=Path, help="write an annotated video (one input video only)")
    p.add_argument("--data-dir", type=Path, help="where snapshots and the embedding cache go")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--detect-video",
        type=Path,
        help="the same camera's sub-stream recording: detect on it, cut faces from VIDEO (frames pair by number)",
    )
    p.add_argument("--detect-fps", type=float, help="detect and recognise on at most this many frames per second")
    p.set_defaults(func=_handler("vigil.commands.process"))


def _add_enroll(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="embed every watchlist photo (cached by model checksum)")
    p.add_argument("watchlist", type=Path)
    p.add_argument("--config", type=Path)
    p.add_argument("--strict", action="store_true", help="a photo without exactly one usable face is fatal")
    p.set_defaults(func=_handler("vigil.commands.enroll"))


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="execution providers, model checksums, camera reachability")
    p.add_argument("--config", type=Path, help="default: ./config.yaml if there is one, else the built-in defaults")
    p.set_defaults(func=_handler("vigil.commands.doctor"))


def _add_outbox(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outbox", help="alert outboxes: rows by state; re-send the given-up ones")
    osub = p.add_subparsers(dest="outbox_command", required=True)
    for name, help_text in (
        ("status", "pending, given-up (dead) and delivered events of each outbox"),
        ("retry", "queue every given-up event again (safe while vigil run runs)"),
    ):
        o = osub.add_parser(name, help=help_text)
        o.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        o.set_defaults(func=_handler("vigil.commands.outbox"))


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluations: lfw, pairs, wider, fewshot, video")
    esub = p.add_subparsers(dest="eval_command", required=True)

    lfw = esub.add_parser("lfw", help="LFW 10-fold protocol, clean or degraded")
    lfw.add_argument("--degraded", action="store_true", help="the seeded surveillance-degraded LFW")
    lfw.add_argument("--model", type=Path, help="recognizer ONNX (default: the shipped one)")
    lfw.add_argument("--detector", type=Path, help="detector model (default: the shipped one)")
    lfw.add_argument("--lfw-dir", type=Path, help="default: <data>/lfw")
    lfw.add_argument(
        "--detections-cache",
        type=Path,
        help="folder that keeps the detections, to compare recognizers on the same faces",
    )
    lfw.add_argument("--json", type=Path, required=True)
    lfw.add_argument(
        "--flip-average",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="embed each face with its mirror image, as the runtime does by default (recognizer.flip_average)",
    )
    lfw.add_argument(
        "--refine-landmarks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refine each face's landmarks with the landmark model before aligning, as the runtime does by default "
        "(detector.refine_landmarks)",
    )
    lfw.set_defaults(func=_handler("vigil.eval.lfw"))

    pairs = esub.add_parser("pairs", help="verification pairs from a CSV img1,img2,same")
    pairs.add_argument("--root", type=Path, required=True)
    pairs.add_argument("--pairs", type=Path, required=True)
    pairs.add_argument("--model", type=Path)
    pairs.add_argument("--detector", type=Path)
    pairs.add_argument("--json", type=Path, required=True)
    pairs.add_argument(
        "--flip-average",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="embed each face with its mirror image, as the runtime does by default (recognizer.flip_average)",
    )
    pairs.add_argument(
        "--refine-landmarks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refine each face's landmarks with the landmark model before aligning, as the runtime does by default "
        "(detector.refine_landmarks)",
    )
    pairs.set_defaults(func=_handler("vigil.eval.pairs"))

    wider = esub.add_parser("wider", help="detector AP on a YOLO-format WIDER FACE sample")
    wider.add_argument("--data", type=Path, required=True, help="data.yaml")
    wider.add_argument("--model", type=Path)
    wider.add_argument("--imgsz", type=int, default=640)
    wider.add_argument(
        "--tile-px", type=int, help="also detect on overlapping tiles of this side (frame px), as detector.tiling does"
    )
    wider.add_argument("--tile-overlap-px", type=int, default=128, help="overlap of neighbouring tiles (frame px)")
    wider.add_argument(
        "--mosaic", help="COLUMNSxROWS: detect on frames of several images side by side (camera-sized frames), e.g. 4x2"
    )
    wider.add_argument("--json", type=Path, required=True)
    wider.set_defaults(func=_handler("vigil.eval.wider"))

    _add_eval_fewshot(esub)

    video = esub.add_parser("video", help="score alerts against a hand annotation of who appears when")
    video.add_argument("--events", type=Path, required=True)
    video.add_argument("--truth", type=Path, required=True)
    video.add_argument("--json", type=Path)
    video.set_defaults(func=_handler("vigil.eval.video"))


def _add_eval_fewshot(esub: argparse._SubParsersAction) -> None:
    from vigil.eval.geometry import Geometry, add_geometry_arguments  # standard library only: cheap at parse time

    fewshot = esub.add_parser("fewshot", help="open-set N-way K-shot watchlists on cached embeddings, per method and K")
    fewshot.add_argument(
        "--pool", type=Path, action="append", required=True, help="embedding cache (pipelines.meta.embed_cache); repeat"
    )
    fewshot.add_argument("--split", type=Path, required=True, help="identity split JSON (pipelines.meta.splits)")
    fewshot.add_argument("--role", default="test", choices=("test", "val"), help="the split's identities to score on")
    fewshot.add_argument("--adapter", type=Path, action="append", help="adapter file (pipelines.meta.train); repeat")
    fewshot.add_argument("--k", type=int, nargs="+", default=[1, 3, 5], help="clean photos per listed person")
    add_geometry_arguments(fewshot, Geometry())
    fewshot.add_argument("--episodes", type=int, default=500)
    fewshot.add_argument("--seed", type=int, default=0)
    fewshot.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    fewshot.add_argument(
        "--min-face-px",
        type=float,
        default=20.0,
        help="narrower camera faces are not recognised (detector.min_face_px)",
    )
    fewshot.add_argument("--json", type=Path, required=True)
    fewshot.set_defaults(func=_handler("vigil.eval.fewshot"))


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that print and save JSON")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    for name, help_text in (
        ("pipeline", "frames/s per stage and end to end on a video"),
        ("embed", "recognizer faces/s at batch 1, 8, 64"),
        ("detect", "detector frames/s at 320/480/640"),
    ):
        b = bsub.add_parser(name, help=help_text)
        b.add_argument("--json", type=Path, required=True)
        b.add_argument(
            "--model", type=Path, help="the model to measure (embed: a recognizer; detect, pipeline: a detector)"
        )
        b.add_argument("--config", type=Path)
        b.add_argument("--video", type=Path, help="pipeline: the video to run (default: the shared Hamilton clip)")
        b.add_argument("--device", default="auto", help="cpu | cuda | auto")
        b.add_argument("--seconds", type=float, default=10.0, help="time budget per measurement")
        if name == "embed":
            b.add_argument(
                "--flip-average",
                action="store_true",
                help="each face with its mirror image, as the runtime's default (recognizer.flip_average): "
                "faces/s counts faces, not network passes",
            )
        if name == "pipeline":
            b.add_argument("--watchlist", type=Path, help="default: examples/hamilton/watchlist.yaml")
            b.add_argument("--height", type=int, default=720, help="resize frames to this height first (0: as is)")
        b.set_defaults(func=_handler(f"vigil.bench.{name}"))
    _add_bench_api(bsub)
    _add_bench_streams(bsub)
    _add_bench_mqtt(bsub)


ROLES = ("admin", "operator", "viewer")  # vigil.store.users.Role, not imported here: --help stays fast


def _add_user(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="service users: add, passwd, del, list")
    usub = p.add_subparsers(dest="user_command", required=True)
    for name, text in (
        ("add", "add a user"),
        ("passwd", "change a password"),
        ("del", "delete a user"),
        ("list", "list users"),
    ):
        c = usub.add_parser(name, help=text)
        c.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="its data_dir holds the users")
        if name != "list":
            c.add_argument("name")
        if name == "add":
            c.add_argument("--role", required=True, choices=ROLES)
        if name in ("add", "passwd"):
            c.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=_handler("vigil.commands.user"))


def _add_token(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="API tokens for machine clients: create, revoke, list")
    tsub = p.add_subparsers(dest="token_command", required=True)
    for name, text in (
        ("create", "create a token (printed once, alone on the last line)"),
        ("revoke", "revoke a token"),
        ("list", "list tokens"),
    ):
        c = tsub.add_parser(name, help=text)
        c.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        if name == "create":
            c.add_argument("--role", required=True, choices=ROLES)
            c.add_argument("--name", default="", help="what the token is for")
            c.add_argument("--expires-days", type=float, help="default: never")
        if name == "revoke":
            c.add_argument("id", help="the token's id (vigil token list)")
    p.set_defaults(func=_handler("vigil.commands.tokens"))


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="the audit log: who read or changed what, when, from where")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--since", default="24h", help="a duration (30m, 24h, 7d) or an ISO-8601 time; default 24h")
    p.add_argument("--actor", help="e.g. user:alice, token:1a2b3c4d, anonymous")
    p.add_argument("--action", help="exact, or a prefix ending in '.' (login.)")
    p.add_argument("--limit", type=int, default=10_000)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_handler("vigil.commands.audit"))


def _add_bench_api(bsub: argparse._SubParsersAction) -> None:
    b = bsub.add_parser("api", help="events query p50/p95 under concurrent clients; pipeline frames/s with API pollers")
    b.add_argument("--json", type=Path, required=True)
    b.add_argument("--events", type=int, default=100_000, help="synthetic events in the store")
    b.add_argument("--clients", type=int, default=20)
    b.add_argument("--seconds", type=float, default=30.0, help="query part: how long the clients run")
    b.add_argument("--skip-query", action="store_true")
    b.add_argument(
        "--config", type=Path, help="also measure `vigil run` with this config: frames/s with and without pollers"
    )
    b.add_argument("--phase-seconds", type=float, default=30.0)
    b.add_argument("--rounds", type=int, default=2, help="pairs of phases (no clients, then clients)")
    b.set_defaults(func=_handler("vigil.bench.api"))


def _add_bench_streams(bsub: argparse._SubParsersAction) -> None:
    b = bsub.add_parser("streams", help="N live cameras through the whole `vigil run` path: drops, latency, CPU")
    b.add_argument("--json", type=Path, required=True)
    b.add_argument("--cameras", type=int, default=1, help="how many cameras (ignored with --find-max)")
    b.add_argument("--height", type=int, default=720, help="the cameras' (main) stream height; 0: the clip as is")
    b.add_argument("--fps", type=float, default=25.0, help="frame rate the cameras send")
    b.add_argument("--seconds", type=float, default=20.0, help="measuring time per trial")
    b.add_argument("--warmup-seconds", type=float, default=6.0, help="run before measuring (queues, caches)")
    b.add_argument("--substream", type=int, default=0, help="detect on a copy of this height (e.g. 360); 0: off")
    b.add_argument("--detect-fps", type=float, help="every camera's detect_fps")
    b.add_argument(
        "--variants",
        default="today,serial,overlapped",
        help="comma list: today (serial loop, no cascade, one stream), serial, overlapped (with cascade, substream)",
    )
    b.add_argument("--find-max", action="store_true", help="search the largest camera count that holds real time")
    b.add_argument("--max-cameras", type=int, default=32, help="--find-max: the search stops here")
    b.add_argument("--p95-ms", type=float, default=250.0, help="real time: p95 frame-to-decision latency bound")
    b.add_argument("--max-drop-pct", type=float, default=1.0, help="real time: fewer dropped frames than this %%")
    b.add_argument("--config", type=Path, help="settings (detector, recognizer, rules, stages); cameras are replaced")
    b.add_argument("--watchlist", type=Path, help="default: examples/hamilton/watchlist.yaml")
    b.add_argument("--video", type=Path, help="default: the shared Hamilton clip")
    b.add_argument("--device", default="auto", help="auto (the config's: CUDA when present) | cpu | cuda")
    b.add_argument("--work-dir", type=Path, default=Path("work/bench/streams"), help="clips and run data go here")
    b.add_argument("--decode-only", action="store_true", help="only measure decoding the clips (CPU ms per frame)")
    b.set_defaults(func=_handler("vigil.bench.streams"))


def _add_bench_mqtt(bsub: argparse._SubParsersAction) -> None:
    b = bsub.add_parser(
        "mqtt", help="MQTT sink: events delivered and lost, latency, pipeline frames/s with and without"
    )
    b.add_argument("--json", type=Path, required=True)
    b.add_argument("--events", type=int, default=10_000, help="events to publish through the sink")
    b.add_argument("--rate", type=float, default=100.0, help="events per second (0: all at once)")
    b.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    b.add_argument("--broker", help="HOST:PORT of a broker to use (default: start a local mosquitto)")
    b.add_argument("--config", type=Path, help="settings for the pipeline runs (its alerts section is not used)")
    b.add_argument("--watchlist", type=Path, help="default: examples/hamilton/watchlist.yaml")
    b.add_argument("--video", type=Path, help="default: the shared Hamilton clip")
    b.add_argument("--height", type=int, default=720, help="resize frames to this height first (0: as is)")
    b.add_argument("--rounds", type=int, default=2, help="pipeline runs per sink, alternated (0: delivery only)")
    b.add_argument("--seconds", type=float, default=0.0, help="time budget per pipeline run (0: the whole video)")
    b.add_argument("--batch", type=int, default=1, help="frames per pipeline batch (1: as vigil run with one camera)")
    b.set_defaults(func=_handler("vigil.bench.mqtt"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil", description="Real-time face-watchlist alerts for video surveillance."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_run,
        _add_process,
        _add_enroll,
        _add_doctor,
        _add_outbox,
        _add_eval,
        _add_bench,
        _add_user,
        _add_token,
        _add_audit,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except VigilError as exc:
        one_line = str(exc).replace("\r", "\\r").replace("\n", "\\n")  # a key or value may hold a line break
        print(f"vigil: error: {one_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vigil: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

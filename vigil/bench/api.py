"""`vigil bench api --json OUT`: the events query under load, and what API clients cost the pipeline.

Query part: a store filled with ``--events`` synthetic events (8 cameras, 60 people, 15 % unknown faces, spread
over 30 days) is served by a real server in a child process (so the load generator does not share its GIL);
``--clients`` threads send events queries back to back for ``--seconds`` (first pages, filters by camera, person,
type, time range, and cursor pages) and the latencies are reported (p50/p95/p99 by query kind and overall).

Pipeline part (``--config C``, a `vigil run` config with cameras): `vigil run` runs as a child process with its API
on a free loopback port; frames/s is read from its own ``vigil_frames_total`` counter over alternating phases with
no client and with ``--clients`` pollers (each, once a second, as the operator page would: the events list, the
camera list, a camera's latest frame, health). Phases alternate so that load drifts on a shared machine fall on both.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
import yaml

from vigil.alerts import utc_timestamp
from vigil.bench.report import save_report
from vigil.config import load_config
from vigil.errors import VigilError
from vigil.store.db import Database
from vigil.store.users import Role, TokenStore

CAMERAS = [f"cam{i}" for i in range(8)]
PEOPLE = [f"person-{i:02d}" for i in range(60)]
PORT_PATTERN = re.compile(r"API on https?://[^:]+:(\d+)/api/v1")


def fill_store(data_dir: Path, events: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    rows = []
    for i in range(events):
        ts = utc_timestamp(now - timedelta(seconds=rng.uniform(0, 30 * 86400)))
        camera = rng.choice(CAMERAS)
        person = rng.choice(PEOPLE) if rng.random() >= 0.15 else None
        unknown = person is None
        record = {
            "type": "unknown" if unknown else "alert",
            "id": f"{i:032x}",
            "camera": camera,
            "ts": ts,
            "track_id": i,
            "score": round(rng.uniform(0.3, 0.95), 4),
            "video_ts_s": 0.0,
            "frame_index": i,
            "bbox": [10.0, 10.0, 60.0, 60.0],
            "snapshot": None,
        }
        if person is not None:
            record.update(
                stage=rng.choice(["provisional", "confirmed"]),
                person_id=person,
                person_name=person.title(),
                list="deny",
                label="watchlist",
                margin=0.1,
            )
        rows.append((record["id"], record["type"], record.get("stage"), camera, person, ts, json.dumps(record)))
    db = Database.in_data_dir(data_dir)
    with db.transaction() as conn:
        conn.executemany("INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ms = np.asarray(values) * 1000.0
    return {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def query_mix(rng: random.Random) -> tuple[str, dict]:
    kind = rng.choice(["newest", "camera", "person", "type", "range", "cursor"])
    params: dict = {"limit": 50}
    if kind == "camera":
        params["camera"] = rng.choice(CAMERAS)
    elif kind == "person":
        params["person"] = rng.choice(PEOPLE)
    elif kind == "type":
        params["type"] = "unknown"
    elif kind == "range":
        start = datetime.now(UTC) - timedelta(days=rng.uniform(1, 29))
        params.update(since=start.isoformat(), until=(start + timedelta(days=1)).isoformat())
    return kind, params


def query_client(
    port: int, token: str, stop: threading.Event, seed: int, out: dict[str, list[float]], errors: list[str]
) -> None:
    """One client: events queries back to back on one keep-alive connection (http.client: a light load generator,
    so that the clients' own CPU time disturbs the server as little as possible on a small machine)."""
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        while not stop.is_set():
            kind, params = query_mix(rng)
            pages = 3 if kind == "cursor" else 1
            for _ in range(pages):
                started = time.perf_counter()
                connection.request("GET", "/api/v1/events?" + urlencode(params), headers=headers)
                answer = connection.getresponse()
                body = answer.read()
                elapsed = time.perf_counter() - started
                if answer.status != 200:
                    errors.append(f"{answer.status} {body[:100]!r}")
                    break
                out.setdefault(kind, []).append(elapsed)
                params = {**params, "cursor": json.loads(body)["next"]}
                if params["cursor"] is None:
                    break
    finally:
        connection.close()


def start_child(args: list[str], log_path: Path, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    """A child process that logs 'API on ...:PORT'; its port once it does."""
    log = log_path.open("w")
    child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env or os.environ.copy())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        match = PORT_PATTERN.search(log_path.read_text(errors="replace"))
        if match:
            return child, int(match.group(1))
        if child.poll() is not None:
            break
        time.sleep(0.2)
    child.kill()
    raise VigilError(f"{' '.join(args[1:4])}: the server did not start within 300 s; its log: {log_path}")


def stop_child(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()


def bench_queries(work: Path, events: int, clients: int, seconds: float) -> dict:
    data_dir = work / "store"
    started = time.perf_counter()
    fill_store(data_dir, events)
    fill_s = time.perf_counter() - started
    db = Database.in_data_dir(data_dir)
    _, token = TokenStore(db).create(Role.VIEWER, "bench", "bench")
    db.close()
    child, port = start_child(
        [sys.executable, "-m", "vigil.bench.api", "--serve-store", str(data_dir)], work / "server.log"
    )
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    try:
        query_client(port, token, _stopped_after(1.0), 99, {}, errors)  # warm up: caches, connections
        stop = threading.Event()
        per_client: list[dict[str, list[float]]] = [{} for _ in range(clients)]
        threads = [
            threading.Thread(target=query_client, args=(port, token, stop, i, per_client[i], errors))
            for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        stop_child(child)
    for result in per_client:
        for kind, values in result.items():
            latencies.setdefault(kind, []).extend(values)
    every = [value for values in latencies.values() for value in values]
    return {
        "events": events,
        "fill_seconds": round(fill_s, 1),
        "clients": clients,
        "seconds": seconds,
        "requests": len(every),
        "requests_per_s": round(len(every) / seconds, 1),
        "errors": len(errors),
        "first_errors": errors[:3],
        "overall": percentiles(every),
        "by_query": {kind: percentiles(values) for kind, values in sorted(latencies.items())},
    }


def _stopped_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return stop


def poller(url: str, token: str, camera: str, stop: threading.Event, counts: list[int]) -> None:
    """An operator page's polling: events, cameras, the latest frame, health, once a second."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as client:
        while not stop.is_set():
            started = time.monotonic()
            for path in (
                "/api/v1/events?limit=50",
                "/api/v1/cameras",
                f"/api/v1/cameras/{camera}/frame.jpg",
                "/api/v1/health",
            ):
                counts[0] += client.get(path).status_code == 200
            stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def frames_total(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    match = re.search(r"^vigil_frames_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def bench_pipeline(work: Path, config_path: Path, clients: int, phase_s: float, rounds: int) -> dict:
    config_path = config_path.resolve()  # its relative paths are rewritten absolute for the copy in ``work``
    config = load_config(config_path)
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    raw["data_dir"] = str(work / "run-data")
    raw["watchlist"] = str(config.watchlist)
    raw["cameras"] = [
        {**camera, "source": str(resolved.source)} for camera, resolved in zip(raw["cameras"], config.cameras)
    ]
    raw["server"] = {**raw.get("server", {}), "listen": "127.0.0.1:0", "enabled": True}
    raw.setdefault("alerts", {})["console"] = False
    run_config = work / "run.yaml"
    run_config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    db = Database.in_data_dir(work / "run-data")
    _, token = TokenStore(db).create(Role.OPERATOR, "bench", "bench")
    db.close()
    child, port = start_child([sys.executable, "-m", "vigil.cli", "run", "--config", str(run_config)], work / "run.log")
    url, camera = f"http://127.0.0.1:{port}", config.cameras[0].name
    phases = []
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as client:
            _wait_for_frames(client, warmup_s=phase_s)
            for _ in range(rounds):
                for n in (0, clients):
                    phases.append(_phase(client, url, token, camera, n, phase_s))
    finally:
        stop_child(child)
    idle = [p["frames_per_s"] for p in phases if p["clients"] == 0]
    busy = [p["frames_per_s"] for p in phases if p["clients"] > 0]
    idle_fps, busy_fps = float(np.mean(idle)), float(np.mean(busy))
    return {
        "config": str(config_path),
        "clients": clients,
        "phase_s": phase_s,
        "phases": phases,
        "frames_per_s_no_clients": round(idle_fps, 2),
        "frames_per_s_with_clients": round(busy_fps, 2),
        "cost_percent": round(100.0 * (idle_fps - busy_fps) / idle_fps, 1) if idle_fps else None,
    }


def _wait_for_frames(client: httpx.Client, warmup_s: float) -> None:
    deadline = time.monotonic() + 300
    while frames_total(client) < 1 and time.monotonic() < deadline:
        time.sleep(1.0)
    time.sleep(warmup_s)


def _phase(client: httpx.Client, url: str, token: str, camera: str, clients: int, seconds: float) -> dict:
    stop, counts = threading.Event(), [0]
    threads = [threading.Thread(target=poller, args=(url, token, camera, stop, counts)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1.0 if clients else 0.0)  # let the pollers reach their steady rate
    start_frames, start = frames_total(client), time.monotonic()
    time.sleep(seconds)
    frames, elapsed = frames_total(client) - start_frames, time.monotonic() - start
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    fps = frames / elapsed
    print(f"  {clients:>3} clients: {fps:.2f} frames/s ({counts[0]} API answers)")
    return {"clients": clients, "frames_per_s": round(fps, 3), "api_answers": counts[0]}


def serve_store(data_dir: Path, watchlist: Path | None = None) -> None:
    """Internal (--serve-store, also used by tests): the API over a store and a watchlist, no pipeline, until
    SIGTERM."""
    from vigil.config import ServerConfig, VigilConfig
    from vigil.live import LiveHub
    from vigil.server.app import create_app
    from vigil.server.context import ServiceContext
    from vigil.server.runner import ServerThread

    config = VigilConfig(data_dir=data_dir, server=ServerConfig(listen="127.0.0.1:0"))
    db = Database.in_data_dir(data_dir)
    server = ServerThread(create_app(ServiceContext.build(config, LiveHub(), db, watchlist=watchlist)), config.server)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    server.start()
    print(f"API on {server.url}/api/v1", flush=True)
    done.wait()
    server.stop()
    db.close()


def run_cli(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would cost the clients CPU
    report: dict = {"host": os.uname().nodename, "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-api-") as tmp:
        work = Path(tmp)
        if not args.skip_query:
            print(f"events query: {args.events} events, {args.clients} clients, {args.seconds:.0f} s")
            report["query"] = bench_queries(work, args.events, args.clients, args.seconds)
            overall = report["query"]["overall"]
            print(
                f"  p50 {overall['p50_ms']} ms, p95 {overall['p95_ms']} ms, p99 {overall['p99_ms']} ms, "
                f"{report['query']['requests_per_s']} requests/s, {report['query']['errors']} errors"
            )
        if args.config is not None:
            print(f"pipeline under `vigil run --config {args.config}`: 0 and {args.clients} polling clients")
            report["pipeline"] = bench_pipeline(work, args.config, args.clients, args.phase_seconds, args.rounds)
            p = report["pipeline"]
            print(
                f"  {p['frames_per_s_no_clients']} frames/s without clients, {p['frames_per_s_with_clients']} "
                f"with {args.clients}: cost {p['cost_percent']} %"
            )
    report["load_avg_end"] = os.getloadavg()
    save_report(report, args.json)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m vigil.bench.api")
    parser.add_argument("--serve-store", type=Path, required=True)
    parser.add_argument("--watchlist", type=Path)
    args = parser.parse_args()
    serve_store(args.serve_store, args.watchlist)


if __name__ == "__main__":
    main()

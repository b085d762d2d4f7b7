"""Prometheus metrics, read at scrape time from what the pipeline published (vigil/live.py) and from the store.

One collector on the app's own registry (no process-global registry): cameras (up, fps, frames read/dropped,
reconnects), per-stage latency histograms (seconds per batch: detect, refine, align, embed, track, decide, batch),
frame-to-alert latency, alerts by person and stage, pipeline counters, outbox pending/dead, stream clients and
drops, watchlist size and reload error.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from vigil.alerts.mqtt import OUTBOX_TABLE as MQTT_OUTBOX_TABLE
from vigil.live import LatencyHistogram
from vigil.server.context import ServiceContext


def _histogram(
    name: str, doc: str, histograms: dict[str, LatencyHistogram], label: str | None
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for key, histogram in histograms.items():
        buckets, total, _ = histogram.snapshot()
        family.add_metric([key] if label else [], [(_bound(b), c) for b, c in buckets], total)
    return family


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


class VigilCollector:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        yield from self._cameras()
        hub = self.ctx.hub
        yield _histogram(
            "vigil_stage_seconds", "Wall time per batch in each pipeline stage", hub.stage_latency, "stage"
        )
        yield _histogram(
            "vigil_frame_to_alert_seconds",
            "From a frame's capture to its event reaching the sinks",
            {"": hub.frame_to_alert},
            None,
        )
        yield _histogram(
            "vigil_frame_to_decision_seconds",
            "From a frame's capture to the decisions on it (every analysed frame)",
            {"": hub.frame_to_decision},
            None,
        )
        yield from self._counters()
        yield from self._stages()
        outbox = self.ctx.events.outbox_counts()
        mqtt_outbox = self.ctx.events.outbox_counts(MQTT_OUTBOX_TABLE)
        for state in ("pending", "dead"):
            yield GaugeMetricFamily(f"vigil_outbox_{state}", f"Webhook outbox rows {state}", value=outbox[state])
            yield GaugeMetricFamily(f"vigil_mqtt_outbox_{state}", f"MQTT outbox rows {state}", value=mqtt_outbox[state])
        yield GaugeMetricFamily(
            "vigil_stream_clients", "Connected Server-Sent Events clients", value=hub.feed.subscribers
        )
        yield CounterMetricFamily(
            "vigil_stream_dropped", "Stream messages dropped for slow clients", value=hub.feed.dropped
        )
        yield GaugeMetricFamily(
            "vigil_watchlist_people", "People enrolled in the running gallery", value=hub.watchlist.people
        )
        yield GaugeMetricFamily(
            "vigil_watchlist_reload_error",
            "1 while the last watchlist reload failed",
            value=1 if hub.watchlist.error else 0,
        )

    def _cameras(self) -> Iterator[Metric]:
        statuses = self.ctx.hub.statuses()
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "up": GaugeMetricFamily("vigil_camera_up", "1 when the camera delivers frames", labels=["camera"]),
            "fps": GaugeMetricFamily("vigil_camera_fps", "Frames read per second (recent)", labels=["camera"]),
            "frames_read": CounterMetricFamily("vigil_camera_frames_read", "Frames decoded", labels=["camera"]),
            "frames_dropped": CounterMetricFamily(
                "vigil_camera_frames_dropped", "Frames dropped by the latest-frame queue", labels=["camera"]
            ),
            "reconnects": CounterMetricFamily("vigil_camera_reconnects", "Successful reconnects", labels=["camera"]),
        }
        for status in statuses:
            values = {
                "up": 1.0 if status.up else 0.0,
                "fps": status.fps,
                "frames_read": status.frames_read,
                "frames_dropped": status.frames_dropped,
                "reconnects": status.reconnects,
            }
            for key, family in families.items():
                family.add_metric([status.name], values[key])
        yield from families.values()

    def _counters(self) -> Iterator[Metric]:
        counters = self.ctx.hub.counters()
        alerts = CounterMetricFamily("vigil_alerts", "Alerts raised", labels=["person", "stage"])
        for key, count in dict(counters.get("alerts_by_person", {})).items():
            person, _, stage = str(key).rpartition(":")
            alerts.add_metric([person, stage], count)
        yield alerts
        for name, doc in (
            ("frames", "Frames processed"),
            ("faces", "Faces detected"),
            ("embeddings", "Faces embedded"),
            ("unknown_events", "Unknown-face events"),
            ("identity_switches", "Tracks split"),
            ("frames_not_analysed", "Frames passed over by their camera's detect_fps"),
            ("cascade_fast_only", "Faces the recognition cascade's fast member found to be nobody"),
            ("cascade_full", "Faces the recognition cascade sent on to the whole ensemble"),
        ):
            yield CounterMetricFamily(f"vigil_{name}", doc, value=float(counters.get(name, 0)))

    def _stages(self) -> Iterator[Metric]:
        """The overlapped stages' queue and two-source cameras' frame pairing (when there are any)."""
        counters = self.ctx.hub.counters()
        stages = dict(counters.get("stages", {}))
        if stages:
            yield GaugeMetricFamily(
                "vigil_stage_queue_depth", "Detected batches waiting for recognition", value=stages["queue_depth"]
            )
            yield CounterMetricFamily(
                "vigil_stage_detect_waited_seconds",
                "Time detection waited for room in the recognition queue (recognition is the bottleneck)",
                value=stages["detect_waited_s"],
            )
        pairing = CounterMetricFamily(
            "vigil_camera_detail_frames",
            "Sub-stream frames with or without their main-stream frame",
            labels=["camera", "result"],
        )
        for camera, detail in dict(counters.get("detail_frames", {})).items():
            pairing.add_metric([camera, "matched"], detail["matched"])
            pairing.add_metric([camera, "unmatched"], detail["unmatched"])
        yield pairing

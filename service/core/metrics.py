"""Prometheus metrics: requests, latency, batch sizes, queue depth, inference time, shadow comparisons and
model lifecycle."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
REJECT_REASONS = ("queue_full", "queue_timeout")
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """One registry per app, so several apps (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cnn_requests_total", "Requests (HTTP and gRPC) by method, route, model and status.",
            ["method", "route", "model", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "cnn_request_seconds", "Request latency (HTTP and gRPC) by method, route and model.",
            ["method", "route", "model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._request_children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self.images = Counter(
            "cnn_images_total", "Images inferred, by model and API.", ["model", "api"], registry=self.registry
        )
        self.batch_size = Histogram(
            "cnn_batch_size", "Images per model call.", ["model"], buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.batch_requests = Histogram(
            "cnn_batch_requests", "Requests merged into one model call.", ["model"],
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.padded = Counter(
            "cnn_padded_images_total", "Rows of padding added to batches to reach a faster batch size.", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge("cnn_queue_images", "Images waiting for the model.", ["model"], registry=self.registry)
        self.inference = Histogram(
            "cnn_inference_seconds", "Model call time.", ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.rejected = Counter(
            "cnn_rejected_total", "Requests refused before inference, by reason.", ["model", "reason"],
            registry=self.registry,
        )  # fmt: skip
        # Shadow versions (service.inference.shadow): comparisons by model, live version and shadow version.
        pair = ["model", "live_version", "shadow_version"]
        self.shadow_requests = Counter(
            "cnn_shadow_requests_total", "Requests also run on a shadow version and compared.", pair,
            registry=self.registry,
        )  # fmt: skip
        self.shadow_predictions = Counter(
            "cnn_shadow_predictions_total", "Images compared between the live and the shadow version.", pair,
            registry=self.registry,
        )  # fmt: skip
        self.shadow_agreements = Counter(
            "cnn_shadow_agreements_total", "Compared images on which the shadow's top-1 class was the live one's.",
            pair, registry=self.registry,
        )  # fmt: skip
        self.shadow_dropped = Counter(
            "cnn_shadow_dropped_total",
            "Requests sampled for a shadow version but not compared, by reason (queue_full, unavailable, "
            "incompatible, failed).",
            ["model", "reason"], registry=self.registry,
        )  # fmt: skip
        self.shadow_seconds = Histogram(
            "cnn_shadow_seconds", "Time from a shadow request's start to the shadow version's answer.",
            ["model", "shadow_version"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        # Payload logging (service.inference.payload_log).
        self.payload_log_events = Counter(
            "cnn_payload_log_events_total", "CloudEvents the payload log delivered, by type (request, response).",
            ["type"], registry=self.registry,
        )  # fmt: skip
        self.payload_log_dropped = Counter(
            "cnn_payload_log_dropped_total",
            "Logged requests (queue_full) or events (failed: the sink kept failing) the payload log dropped.",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        # Model lifecycle, labelled by model name (versions come and go; names are the repository's).
        self.versions = Gauge(
            "cnn_model_versions", "Model versions by state.", ["model", "state"], registry=self.registry
        )
        self.loads = Counter(
            "cnn_model_loads_total", "Version loads by result (success, failure).", ["model", "result"],
            registry=self.registry,
        )  # fmt: skip
        self.unloads = Counter("cnn_model_unloads_total", "Versions unloaded.", ["model"], registry=self.registry)
        self.load_seconds = Histogram(
            "cnn_model_load_seconds", "Time to load a version's SavedModel and card.", ["model"],
            buckets=_LOAD_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.warmup_seconds = Histogram(
            "cnn_model_warmup_seconds", "Time to warm a loaded version up.", ["model"],
            buckets=_LOAD_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def observe_request(self, method: str, route: str, model: str, status: str, seconds: float) -> None:
        """Count one answered request (HTTP or gRPC) and its latency. The labelled children are looked up
        once per label set (``labels`` takes a lock and builds a key); callers keep every label bounded:
        route templates, known model names, status codes."""
        key = (method, route, model, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(method, route, model, status),
                self.latency.labels(method, route, model),
            )
        children[0].inc()
        children[1].observe(seconds)

    def forget_version(self, label: str) -> None:
        """Drop an unloaded version's per-version series (``name:version`` labels)."""
        series = [(m, (label,)) for m in (self.batch_size, self.batch_requests, self.padded, self.queue_depth,
                                                    self.inference)]  # fmt: skip
        series += [(self.rejected, (label, reason)) for reason in REJECT_REASONS]
        for metric, labels in series:
            with contextlib.suppress(KeyError):  # never observed
                metric.remove(*labels)

"""Service configuration from environment variables (prefix ``CNN_``)."""

from __future__ import annotations

import json
from functools import lru_cache
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, HttpUrl, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contract import DEFAULT_REPOSITORY


class Settings(BaseSettings):
    """Every knob of the service; each field is read from ``CNN_<FIELD_NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CNN_", env_file=None, protected_namespaces=(), populate_by_name=True)

    model_repository: Path = Field(DEFAULT_REPOSITORY, description="Directory of <model>/<version>/ SavedModels.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description='Models to load, as a JSON list or comma-separated: ["fashion_cnn", "lenet5:1"] or '
        "fashion_cnn,lenet5:1 (name or name:version); empty = all.",
    )
    version_policy: str = Field(
        "latest",
        pattern=r"^(latest(:[1-9][0-9]*)?|all)$",
        description="Versions served per model without a config file: latest, latest:N (N newest) or all; "
        "the highest available one is the default.",
    )
    model_config_file: Path | None = Field(
        None,
        validation_alias=AliasChoices("CNN_MODEL_CONFIG", "model_config_file"),
        description="JSON model config (TF Serving's model_config_list fields); re-read when it changes.",
    )
    poll_interval_s: float = Field(
        2.0, ge=0, description="How often to look for new, changed or removed versions (0 = only at start)."
    )
    allow_model_control: bool | None = Field(
        None,
        description="Allow the repository API's load/unload and label changes. Unset: allowed only when "
        "bound to a loopback address or an API key is set.",
    )
    max_batch_size: int = Field(64, ge=1, le=4096, description="Most images the batcher runs in one model call.")
    max_concurrent_batches: int = Field(
        0,
        ge=0,
        le=16,
        description="Model calls in flight at once per model version, each a thread of its own "
        "(0: as many as the served engine runs well at once: OpenVINO's streams for the cores, 1 for TensorFlow).",
    )
    max_batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="Longest wait for a batch to fill up.")
    max_queue_images: int = Field(2048, ge=1, description="Images waiting per model before new requests get 503.")
    queue_timeout_s: float = Field(10.0, gt=0, description="Images older than this when dequeued are dropped (503).")
    request_timeout_s: float = Field(30.0, gt=0, description="End-to-end limit on one inference (504 after it).")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body (413 above).")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest decoded image, width × height (413).")
    max_request_pixels: int = Field(
        80_000_000, ge=1, description="Most pixels the images of one request may hold in all (413 above)."
    )
    max_images_per_request: int = Field(256, ge=1, description="Most images in one request (413 above).")
    max_feature_map_images: int = Field(
        8, ge=1, description="Most images in one feature-map request (every layer's activations: ~1.5 MB each)."
    )
    max_concurrent_feature_maps: int = Field(
        2, ge=1, le=16, description="Feature-map calls computing at once; more wait (up to the request timeout)."
    )
    shadow_queue_images: int = Field(
        1024, ge=1, description="Images waiting to run on a shadow version before more are dropped (counted)."
    )
    default_top_k: int = Field(3, ge=1, description="top-k returned when the request does not say.")
    runtime: Literal["auto", "tensorflow", "openvino"] = Field(
        "auto", description="Runtime of predictions: auto (the fastest measured at load), tensorflow or openvino."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        "auto",
        description="Precision of predictions: auto (the fastest measured that passes the accuracy "
        "gate), fp32, bf16 (CPUs with AVX-512 BF16 or AMX), fp16 (GPUs with tensor cores) or int8 "
        "(OpenVINO, a version's quantized model).",
    )
    max_accuracy_drop: float = Field(
        0.1,
        ge=0,
        le=100,
        description="Largest recorded test-accuracy drop from float32, in percentage points, "
        "that a runtime or precision may have to be served.",
    )
    batch_buckets: list[Annotated[int, Field(ge=1)]] | None = Field(
        None,
        description="Batch sizes a batch is padded up to, e.g. [2, 4, 8] (the smallest that holds it); "
        "unset: measured at load; []: never pad.",
    )
    inference_threads: int = Field(0, ge=0, description="TensorFlow intra-op threads (0 = TensorFlow's default).")
    gil_switch_interval_ms: float = Field(
        0.5, gt=0, le=100,
        description="Longest a thread holding Python's GIL keeps another waiting for it (Python's default: 5).",
    )  # fmt: skip
    compute_nice: int = Field(
        3, ge=0, le=19,
        description="Nice levels below the event loop that the threads computing models run at (model loading, "
        "batched model calls, the engines' own threads; Linux only), so that under load the loop, which reads "
        "requests and answers them, is not kept waiting for a core behind them; 0: the same priority.",
    )  # fmt: skip
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names a loopback-bound server answers besides localhost, 127.0.0.1 and ::1 (it refuses "
        "others: DNS rebinding), as a JSON list or comma-separated.",
    )
    api_key: str | None = Field(
        None,
        pattern=r"^\S+$",
        description="When set, requests must send it as X-API-Key or Bearer token (no spaces; unset: no key).",
    )
    shutdown_timeout_s: float = Field(20.0, gt=0, description="Grace period for in-flight requests on SIGTERM.")
    host: str = Field(
        "127.0.0.1",
        pattern=r"^(localhost|[0-9.]+|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$",
        description="Bind address of the REST and gRPC servers (an IP address or a host name).",
    )
    port: int = Field(8000, ge=1, le=65535, description="REST port.")
    grpc_port: int = Field(
        8500, ge=0, le=65535, description="gRPC port (KServe v2 and TF Serving services, health, reflection); 0: off."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="A connection must send each request's headers within this time."
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, le=300, description="An idle keep-alive connection is closed after this."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Logging level: critical, error, warning, info or debug (debug also shows TensorFlow's)."
    )
    log_format: Literal["human", "json"] = Field(
        "human", description="Log lines as text (human) or as one JSON object per line (json)."
    )
    access_log: bool | None = Field(
        None,
        description="One log line per request: id, trace id, protocol, route, model, version, status, images, "
        "latency. Unset: on with CNN_LOG_FORMAT=json, off otherwise (metrics count requests either way).",
    )
    logger_url: HttpUrl | None = Field(
        None, description="Payload logging: where each sampled inference request and response is POSTed as a "
        "CloudEvent (KServe's logger format); unset: off.",
    )  # fmt: skip
    logger_mode: Literal["all", "request", "response"] = Field(
        "all", description="Payload logging: the requests, the responses, or both."
    )
    logger_sample: float = Field(1.0, ge=0, le=1, description="Payload logging: the share of requests logged.")

    @field_validator("models", "allowed_hosts", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        """A JSON list, or names separated by commas (an empty string: every model)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("expected a JSON list or comma-separated names") from None
        names = [name.strip() for name in text.split(",")] if text else []
        if any(not name or " " in name for name in names):
            raise ValueError("expected a JSON list or comma-separated names")
        return names

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def checks_host(self) -> bool:
        """A loopback bind answers only to the names that reach it (a rebound DNS name is refused)."""
        return _is_loopback(self.host)

    @property
    def writes_access_log(self) -> bool:
        return self.access_log if self.access_log is not None else self.log_format == "json"

    @property
    def model_control_allowed(self) -> bool:
        if self.allow_model_control is not None:
            return self.allow_model_control
        return bool(self.api_key) or _is_loopback(self.host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()

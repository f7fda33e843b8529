"""``cnn-serving serve``: every setting as a flag, TensorFlow Serving's flags with their meaning, and the server.

Precedence, lowest first: the defaults, the ``CNN_*`` environment, TF Serving's image environment
(``MODEL_NAME``, ``MODEL_BASE_PATH``), TF Serving's flags, this command's own flags. Whatever the source,
the value is checked by the one :class:`~service.core.settings.Settings` class, and the models it names
are looked for before anything heavy is imported: a bad value is one line naming the flag or variable,
exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError

from service.cli.errors import ConfigurationError, describe, env_name
from service.core import logs, tracing
from service.core.settings import Settings
from service.hosting.model_config import ConfigError, ModelSources, VersionPolicy
from service.transports.http_protocol import with_header_deadline

logger = logging.getLogger("service")

# This command's flag for each setting, where it is not the field's name with dashes.
_FLAG_NAMES = {"port": "rest-port", "model_config_file": "model-config"}
# TensorFlow Serving's flags this server takes, and the variable each sets (the others are below).
_TF_SERVING_VARIABLES = {
    "port": "CNN_GRPC_PORT",
    "rest_api_port": "CNN_PORT",
    "model_config_file": "CNN_MODEL_CONFIG",
    "file_system_poll_wait_seconds": "CNN_POLL_INTERVAL_S",
    "tensorflow_intra_op_parallelism": "CNN_INFERENCE_THREADS",
}
_TF_SERVING_FLAGS = (  # name, metavar, help
    ("port", "PORT", "gRPC port [CNN_GRPC_PORT]"),
    ("rest_api_port", "PORT", "REST port [CNN_PORT]; REST is always served"),
    ("model_name", "NAME", "serve only this model"),
    ("model_base_path", "PATH", "the model's directory of numbered versions"),
    ("model_config_file", "FILE", "a ModelServerConfig (text proto or JSON) [CNN_MODEL_CONFIG]"),
    ("file_system_poll_wait_seconds", "S", "poll interval [CNN_POLL_INTERVAL_S]"),
    ("model_config_file_poll_wait_seconds", "S", "accepted: the config is re-read when it changes"),
    ("rest_api_timeout_in_ms", "MS", "request timeout [CNN_REQUEST_TIMEOUT_S × 1000]"),
    ("tensorflow_intra_op_parallelism", "N", "TensorFlow threads [CNN_INFERENCE_THREADS]"),
    ("enable_batching", "BOOL", "accepted: batching is always on"),
)
_TF_SERVING_IMAGE_PORTS = {"CNN_GRPC_PORT": "8500", "CNN_PORT": "8501"}
_TF_SERVING_MODELS = "/models"  # MODEL_BASE_PATH's default in TF Serving's image


def flag(field: str) -> str:
    return "--" + _FLAG_NAMES.get(field, field.replace("_", "-"))


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "serve",
        allow_abbrev=False,
        help="run the server (REST and gRPC)",
        description="Serve the models of a repository over REST and gRPC. Every flag is also an environment "
        "variable (shown in brackets); flags win. TensorFlow Serving's own flags work too.",
    )
    own = parser.add_argument_group("settings")
    for field, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = "unset" if default is None else json.dumps(default) if isinstance(default, list) else default
        help_text = f"{info.description} [{env_name(field)}; default: {shown}]".replace("%", "%%")
        if info.annotation in (bool, bool | None):
            own.add_argument(
                flag(field), dest=field, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            own.add_argument(flag(field), dest=field, metavar="VALUE", default=None, help=help_text)
    tf = parser.add_argument_group(
        "TensorFlow Serving's flags", "Taken with their meaning, so a TF Serving deployment keeps its arguments."
    )
    for name, metavar, help_text in _TF_SERVING_FLAGS:
        dest = f"tf_{name}"
        if name == "enable_batching":  # TF Serving takes it bare or with a value
            tf.add_argument(f"--{name}", dest=dest, nargs="?", const="true", metavar=metavar, help=help_text)
        else:
            tf.add_argument(f"--{name}", dest=dest, metavar=metavar, help=help_text)
    return parser


def unknown_flags(extra: list[str]) -> str:
    """The error for flags neither this command nor TF Serving's set here knows."""
    names = sorted({arg.split("=", 1)[0] for arg in extra if arg.startswith("--")}) or extra
    tf_style = [name for name in names if "_" in name]
    if tf_style:
        known = ", ".join(f"--{name}" for name, _, _ in _TF_SERVING_FLAGS)
        return f"unsupported TensorFlow Serving flag(s): {', '.join(tf_style)} (supported: {known})"
    return f"unknown option(s): {', '.join(names)} (see cnn-serving serve --help)"


def _tf_serving(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The variables TF Serving's image environment and flags set, and the flag each came from."""
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    name, base_path = args.tf_model_name, args.tf_model_base_path
    model_sources = ("--model_name", "--model_base_path")
    if env.get("MODEL_NAME"):  # run the way TF Serving's image runs: its model and ports
        values.update(_TF_SERVING_IMAGE_PORTS)
        model_sources = (
            "--model_name" if name else "MODEL_NAME",
            "--model_base_path" if base_path else "MODEL_BASE_PATH",
        )
        name = name or env["MODEL_NAME"]
        base_path = base_path or f"{env.get('MODEL_BASE_PATH') or _TF_SERVING_MODELS}/{name}"
    tf_flags = {key: getattr(args, f"tf_{key}") for key in _TF_SERVING_VARIABLES}
    for key, value in tf_flags.items():
        if value is not None:
            values[_TF_SERVING_VARIABLES[key]] = value
            sources[_TF_SERVING_VARIABLES[key]] = f"--{key}"
    if values.get("CNN_PORT") == "0":
        raise ConfigurationError("--rest_api_port: REST is always served here, expected a port 1–65535, got '0'")
    if args.tf_rest_api_timeout_in_ms is not None:
        try:
            values["CNN_REQUEST_TIMEOUT_S"] = str(float(args.tf_rest_api_timeout_in_ms) / 1000)
        except ValueError:
            raise ConfigurationError(
                f"--rest_api_timeout_in_ms: expected milliseconds, got {args.tf_rest_api_timeout_in_ms!r}"
            ) from None
        sources["CNN_REQUEST_TIMEOUT_S"] = "--rest_api_timeout_in_ms"
    if args.tf_enable_batching is not None:
        logger.info("--enable_batching=%s: batching is always on here (CNN_MAX_BATCH_SIZE, CNN_MAX_BATCH_WAIT_MS)",
                    args.tf_enable_batching)  # fmt: skip
    if base_path is not None:
        values.update(_one_model(name, Path(base_path)))
        sources.update(
            {
                "CNN_MODELS": model_sources[0],
                "CNN_MODEL_REPOSITORY": model_sources[1],
                "CNN_MODEL_CONFIG": model_sources[1],
            }
        )
    elif name is not None:
        values["CNN_MODELS"] = name
        sources["CNN_MODELS"] = "--model_name"
    return values, sources


def _one_model(name: str | None, base_path: Path) -> dict[str, str]:
    """TF Serving's one model (``--model_name``, ``--model_base_path``) as this server's settings."""
    name = name or "default"  # TF Serving's default model name
    if not base_path.is_dir():
        raise ConfigurationError(f"--model_base_path: {base_path} is not a directory")
    if base_path.name == name:
        return {"CNN_MODEL_REPOSITORY": str(base_path.parent), "CNN_MODELS": name}
    config = {"model_config_list": [{"name": name, "base_path": str(base_path.absolute())}]}
    try:
        folder = Path(tempfile.mkdtemp(prefix="cnn-serving-"))
    except OSError as exc:
        raise ConfigurationError(
            f"--model_base_path: {base_path} does not end in the model's name {name!r} and no temporary "
            f"directory can hold a model config ({exc.strerror}); use --model_config_file"
        ) from None
    path = folder / "models.json"
    path.write_text(json.dumps(config))
    return {"CNN_MODEL_CONFIG": str(path)}


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Settings, dict[str, str]]:
    """The settings of ``serve``, checked, with the models they name looked for; and the ``CNN_*``
    variables that give them (:func:`run` hands those to the app factory through the environment)."""
    values = {key: value for key, value in env.items() if key.startswith("CNN_")}
    tf_values, sources = _tf_serving(args, env)
    values.update(tf_values)
    for field in Settings.model_fields:
        value = getattr(args, field)
        if value is not None:
            variable = env_name(field)
            values[variable] = str(value).lower() if isinstance(value, bool) else value
            sources[variable] = flag(field)
    with _environment(values):
        try:
            settings = Settings()
        except (ValidationError, SettingsError) as exc:
            raise ConfigurationError(describe(exc, values, sources)) from None
    _check_models(settings, sources)
    if tracing.wanted(env):
        try:
            tracing.protocol(env)
        except tracing.TracingError as exc:
            raise ConfigurationError(str(exc)) from None
    return settings, values


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: value for key, value in os.environ.items() if key.startswith("CNN_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)


def _check_models(settings: Settings, sources: Mapping[str, str]) -> None:
    """The repository (or config file) exists and holds the models asked for."""
    sources_reader = ModelSources(
        settings.model_config_file, settings.model_repository, settings.models,
        VersionPolicy.parse(settings.version_policy),
    )  # fmt: skip
    try:
        sources_reader.read()
    except ConfigError as exc:
        variable = env_name(exc.setting)
        raise ConfigurationError(f"{sources.get(variable, variable)}: {exc}") from None


def quiet_native_logs(settings: Settings) -> None:
    """TensorFlow's and gRPC's C++ logs only at debug level (before either is imported)."""
    debug = settings.log_level == "debug"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug else "3")
    os.environ.setdefault("GRPC_VERBOSITY", "DEBUG" if debug else "ERROR")


class Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the caught signal after a graceful shutdown (exit status 0), and
    with gRPC refusing new calls as soon as the signal arrives, as HTTP does (not after HTTP has drained)."""

    _loop: asyncio.AbstractEventLoop | None = None
    _grpc_stop: asyncio.Task | None = None

    async def serve(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        app = self.config.loaded_app
        while app is not None and not hasattr(app, "state"):  # under uvicorn's own middlewares
            app = getattr(app, "app", None)
        grpc_server = getattr(getattr(app, "state", None), "grpc", None)
        loop = self._loop
        if grpc_server is not None and loop is not None and self._grpc_stop is None:
            grace = self.config.timeout_graceful_shutdown or 0.0

            def stop() -> None:
                self._grpc_stop = loop.create_task(grpc_server.stop(grace))

            loop.call_soon_threadsafe(stop)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def run(settings: Settings, variables: Mapping[str, str]) -> None:
    """Serve until SIGTERM or SIGINT: in-flight requests finish (up to ``CNN_SHUTDOWN_TIMEOUT_S``).
    ``variables`` (``CNN_*``) replace the environment's, where the app factory reads its settings."""
    for name in [name for name in os.environ if name.startswith("CNN_")]:
        del os.environ[name]
    os.environ.update(variables)
    quiet_native_logs(settings)
    logs.configure(settings.log_level, settings.log_format)
    with logs.native_stderr_logged("native"):
        import service.app  # noqa: F401  (TensorFlow and gRPC load here, and TensorFlow's C++ may write as it does)
    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # JSON lines: uvicorn's own loggers go through the root logger's format instead of uvicorn's.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=False,  # the service writes its own access lines (service.core.logs)
        loop="uvloop",
        http=with_header_deadline(settings.header_timeout_s),
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        timeout_keep_alive=settings.keep_alive_timeout_s,
    )
    Server(config).run()

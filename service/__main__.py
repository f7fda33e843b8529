"""``python -m service``: run the server with uvicorn on ``CNN_HOST``:``CNN_PORT``.

On SIGTERM/SIGINT uvicorn stops accepting connections, lets in-flight requests finish (up to
``CNN_SHUTDOWN_TIMEOUT_S``), drains the batchers, and this process then exits with status 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import uvicorn

from service.core.settings import get_settings


class Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the caught signal after a graceful shutdown (exit status 0)."""

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


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        timeout_keep_alive=5,
    )
    Server(config).run()


if __name__ == "__main__":
    main()

"""``python -m service [flags]``: ``cnn-serving serve`` (uvicorn, uvloop and httptools, one process).

On SIGTERM/SIGINT uvicorn stops accepting connections, lets in-flight requests finish (up to
``CNN_SHUTDOWN_TIMEOUT_S``), drains the batchers, and this process then exits with status 0.
"""

from __future__ import annotations

import sys

from service.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))

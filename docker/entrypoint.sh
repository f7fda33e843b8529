#!/bin/sh
# Starts the API server (`python -m service`: uvicorn with uvloop and httptools, one process; scale
# with replicas). `exec` replaces this shell, so the server runs as PID 1 and receives SIGTERM
# directly: it stops accepting connections, lets in-flight requests finish for up to
# CNN_SHUTDOWN_TIMEOUT_S seconds (keep it below the orchestrator's kill timeout, e.g. Kubernetes'
# terminationGracePeriodSeconds, and above the queue timeout), drains the batchers and exits 0.
# Host, port and log level come from CNN_HOST, CNN_PORT and CNN_LOG_LEVEL.
set -eu
exec python -m service "$@"

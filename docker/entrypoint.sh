#!/bin/sh
# Starts the API server. `exec` replaces this shell, so uvicorn runs as PID 1 and receives
# SIGTERM directly: it stops accepting connections and lets in-flight requests finish for up to
# UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN seconds (keep it below the orchestrator's kill timeout,
# e.g. Kubernetes' terminationGracePeriodSeconds, and above the service's queue timeout).
# Extra arguments are passed on to uvicorn.
set -eu
exec uvicorn service.app:app \
    --host "${CNN_HOST:-0.0.0.0}" \
    --port "${CNN_PORT:-8000}" \
    --workers "${WEB_CONCURRENCY:-1}" \
    --timeout-graceful-shutdown "${UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN:-20}" \
    "$@"

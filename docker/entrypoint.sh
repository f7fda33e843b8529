#!/bin/sh
# Starts the API server (`python -m service`: uvicorn with uvloop and httptools, one process; scale
# with replicas). `exec` replaces this shell, so the server runs as PID 1 and receives SIGTERM
# directly: it stops accepting connections, lets in-flight requests finish for up to
# CNN_SHUTDOWN_TIMEOUT_S seconds (keep it below the orchestrator's kill timeout, e.g. Kubernetes'
# terminationGracePeriodSeconds, and above the queue timeout), drains the batchers and exits 0.
# Arguments are `cnn-serving serve`'s: its own flags or TensorFlow Serving's (--port, --rest_api_port,
# --model_name, --model_base_path, ...); the environment's CNN_* settings, and TF Serving's MODEL_NAME and
# MODEL_BASE_PATH, apply too. `docker run IMAGE --help` lists them.
set -eu
exec python -m service "$@"

#!/usr/bin/env bash
# Builds the image, starts it the way Kubernetes runs it (read-only root filesystem, no
# capabilities, non-root), waits for readiness, checks the APIs (REST and gRPC) with real Fashion-MNIST
# images (docker/smoke_check.py), then stops it with SIGTERM and checks that it shut down cleanly.
#
#   docker/smoke-test.sh                     # CPU image
#   TARGET=gpu GPU_FLAGS="--gpus all" docker/smoke-test.sh
#
# Environment: TARGET (cpu), IMAGE (cnn-serving:$TARGET), PORT (a free port), SKIP_BUILD (0),
# READY_TIMEOUT_S (120), PYTHON (.venv/bin/python), GPU_FLAGS (extra `docker run` flags),
# EXPECT_GPU (0; 1 fails the test unless TensorFlow in the container sees a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${TARGET:-cpu}"
IMAGE="${IMAGE:-cnn-serving:${TARGET}}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-120}"
PYTHON="${PYTHON:-.venv/bin/python}"
SKIP_BUILD="${SKIP_BUILD:-0}"
GPU_FLAGS="${GPU_FLAGS:-}"
EXPECT_GPU="${EXPECT_GPU:-0}"
CONTAINER="cnn-serving-smoke-$$"

log() { printf '[smoke] %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# A machine without a running Docker engine may carry a script that starts one locally.
if ! docker info >/dev/null 2>&1; then
  if [[ -f ../shared/docker/local-engine.sh ]]; then
    bash ../shared/docker/local-engine.sh
  else
    echo "no Docker engine answers (docker info failed)" >&2
    exit 1
  fi
fi

if [[ -z "${PORT:-}" ]]; then
  PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
if [[ -z "${GRPC_PORT:-}" ]]; then
  GRPC_PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
BASE_URL="http://127.0.0.1:${PORT}"

if [[ "$SKIP_BUILD" != 1 ]]; then
  log "building $IMAGE (target $TARGET)"
  build_start="$(now)"
  docker build --network host --target "$TARGET" -t "$IMAGE" .
  log "build took $(elapsed "$build_start" "$(now)") s"
fi
size_bytes="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
log "image $IMAGE: $((size_bytes / 1024 / 1024)) MiB ($size_bytes bytes)"

cleanup() {
  status=$?
  if docker container inspect "$CONTAINER" >/dev/null 2>&1; then
    if [[ $status -ne 0 ]]; then
      log "container logs:"
      docker logs --tail 200 "$CONTAINER" 2>&1 | sed 's/^/    /' || true
    fi
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT

log "starting $CONTAINER on port $PORT"
start="$(now)"
# shellcheck disable=SC2086  # GPU_FLAGS is a list of flags
docker run -d --name "$CONTAINER" --network host \
  --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
  -e CNN_PORT="$PORT" -e CNN_GRPC_PORT="$GRPC_PORT" -e CNN_LOG_LEVEL=info $GPU_FLAGS \
  "$IMAGE" >/dev/null

ready=""
while [[ -z "$ready" ]]; do
  if [[ "$(docker container inspect -f '{{.State.Running}}' "$CONTAINER")" != true ]]; then
    log "container exited before it became ready"
    exit 1
  fi
  if curl -fsS -o /dev/null --max-time 2 "$BASE_URL/health/ready" 2>/dev/null; then
    ready="$(now)"
    break
  fi
  if [[ "$(elapsed "$start" "$(now)" | cut -d. -f1)" -ge "$READY_TIMEOUT_S" ]]; then
    log "not ready after ${READY_TIMEOUT_S} s"
    exit 1
  fi
  sleep 0.5
done
cold_start="$(elapsed "$start" "$ready")"
log "ready: cold start to ready in $cold_start s"

user="$(docker exec "$CONTAINER" id -u)"
[[ "$user" != 0 ]] || { log "the service runs as root"; exit 1; }
log "runs as uid $user with a read-only root filesystem"
devices="$(docker logs "$CONTAINER" 2>&1 | grep -m1 -o 'TensorFlow .* sees devices: .*' || true)"
log "${devices:-the service did not log its TensorFlow devices}"
models="$(docker logs "$CONTAINER" 2>&1 | grep -m1 -o 'serving [0-9]* model version.*' || true)"
log "${models:-the service did not log its models}"
if [[ "$EXPECT_GPU" == 1 && "$devices" != *GPU* ]]; then
  log "EXPECT_GPU=1 but TensorFlow sees no GPU"
  exit 1
fi

"$PYTHON" docker/smoke_check.py --url "$BASE_URL" --grpc "127.0.0.1:$GRPC_PORT"

# The image's HEALTHCHECK (first run after its 15 s interval) must agree.
health=""
for _ in $(seq 60); do
  health="$(docker container inspect -f '{{.State.Health.Status}}' "$CONTAINER")"
  [[ "$health" == starting ]] || break
  sleep 1
done
[[ "$health" == healthy ]] || { log "docker health status: $health"; exit 1; }
log "docker HEALTHCHECK: $health"

# SIGTERM must reach the server (PID 1), which shuts down gracefully (the app logs "stopped" after
# draining its batchers) well before docker's SIGKILL, and exits 0; 137 would mean SIGKILL.
stop_start="$(now)"
docker stop -t 30 "$CONTAINER" >/dev/null
stop_time="$(elapsed "$stop_start" "$(now)")"
exit_code="$(docker container inspect -f '{{.State.ExitCode}}' "$CONTAINER")"
[[ "$exit_code" == 0 ]] || { log "exit code after SIGTERM: $exit_code"; exit 1; }
docker logs "$CONTAINER" 2>&1 | grep -Eq ': stopped$' || { log "no graceful shutdown in the logs"; exit 1; }
log "stopped by SIGTERM in $stop_time s (exit code $exit_code, graceful shutdown logged)"

# Run the way TF Serving's image is run: MODEL_NAME and MODEL_BASE_PATH, REST on 8501, gRPC on 8500.
TFS_CONTAINER="${CONTAINER}-tfs"
docker run -d --name "$TFS_CONTAINER" --network host --read-only --tmpfs /tmp --cap-drop ALL \
  -e MODEL_NAME=fashion_cnn -e MODEL_BASE_PATH=/app/model_repository "$IMAGE" >/dev/null
trap 'docker rm -f "$TFS_CONTAINER" >/dev/null 2>&1 || true; cleanup' EXIT
tfs_start="$(now)"
until curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8501/v1/models/fashion_cnn 2>/dev/null; do
  if [[ "$(docker container inspect -f '{{.State.Running}}' "$TFS_CONTAINER")" != true ]]; then
    docker logs --tail 50 "$TFS_CONTAINER" 2>&1 | sed 's/^/    /'
    log "the TF Serving-style container exited"
    exit 1
  fi
  [[ "$(elapsed "$tfs_start" "$(now)" | cut -d. -f1)" -lt "$READY_TIMEOUT_S" ]] || { log "TF Serving-style run not ready"; exit 1; }
  sleep 0.5
done
"$PYTHON" docker/smoke_check.py --tf-serving --url http://127.0.0.1:8501 --grpc 127.0.0.1:8500
docker rm -f "$TFS_CONTAINER" >/dev/null

log "PASS image=$IMAGE size_mib=$((size_bytes / 1024 / 1024)) cold_start_to_ready_s=$cold_start stop_s=$stop_time"

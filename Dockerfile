# Fashion-MNIST CNN inference service.
#
#   docker build --target cpu -t cnn-serving:cpu .    # tensorflow-cpu
#   docker build --target gpu -t cnn-serving:gpu .    # tensorflow[and-cuda]; run with --gpus all
#
# Name the target: BuildKit then builds only the stages that target needs, while the legacy
# builder builds every stage up to it (which is why `cpu` comes before the GPU stages).
# Without --target, BuildKit builds the last stage, `default`, which is the CPU image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# ---------------------------------------------------------------------------------------------
# Builders: a virtual environment in /opt/venv that the runtime stage copies whole.
# Dependencies are installed against an empty stub of the project first, so that their large
# layer is rebuilt only when pyproject.toml or constraints.txt change, not on every source edit.
# (README.md only feeds package metadata, so the stub's empty one stays.) The stub's build directory is
# removed: its files are newer than the sources copied next, and setuptools would install them instead.
FROM base AS builder
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt ./
RUN mkdir contract models service && touch README.md contract/__init__.py models/__init__.py service/__init__.py

FROM builder AS build-cpu
RUN pip install --no-cache-dir -c constraints.txt '.[cpu,openvino]' && pip uninstall -y cnn-serving \
 && pip install --no-cache-dir --no-deps -c constraints.txt tensorflow-serving-api \
 && rm -rf build *.egg-info
COPY contract ./contract
COPY models ./models
COPY service ./service
RUN pip install --no-cache-dir --no-deps .

# ---------------------------------------------------------------------------------------------
# Runtime: non-root user, the bundled model repository, `cnn-serving serve` (python -m service) as the
# entrypoint; the `cnn-serving` command (client commands too) is on PATH.
FROM base AS runtime
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid app --no-log-init --create-home --home-dir /home/app --shell /usr/sbin/nologin app
WORKDIR /app
# Models are read from here unless CNN_MODEL_REPOSITORY points elsewhere (e.g. a mounted volume).
ENV CNN_MODEL_REPOSITORY=/app/model_repository \
    CNN_HOST=0.0.0.0 \
    CNN_PORT=8000 \
    CNN_GRPC_PORT=8500
COPY docker/entrypoint.sh /usr/local/bin/cnn-serving-entrypoint
COPY docker/healthcheck.py /usr/local/bin/cnn-serving-healthcheck
# HTTP (REST APIs, the explorer page) and gRPC (KServe v2 and TF Serving services); run the way TF
# Serving's image is run (MODEL_NAME, MODEL_BASE_PATH), REST moves to TF Serving's 8501.
EXPOSE 8000 8500 8501
# Readiness, not just liveness: healthy once every model is loaded and warmed up.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "/usr/local/bin/cnn-serving-healthcheck"]
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/cnn-serving-entrypoint"]

# ---------------------------------------------------------------------------------------------
FROM runtime AS cpu
COPY --from=build-cpu /opt/venv /opt/venv
COPY model_repository /app/model_repository

# The GPU build stage comes after `cpu`, so the legacy builder stops before it for --target cpu.
FROM builder AS build-gpu
RUN pip install --no-cache-dir -c constraints.txt '.[gpu]' && pip uninstall -y cnn-serving \
 && pip install --no-cache-dir --no-deps -c constraints.txt tensorflow-serving-api \
 && rm -rf build *.egg-info
COPY contract ./contract
COPY models ./models
COPY service ./service
RUN pip install --no-cache-dir --no-deps .

FROM runtime AS gpu
# The CUDA libraries come as pip wheels; the NVIDIA container runtime adds the driver. Which GPUs
# are visible is left to `--gpus` or the Kubernetes device plugin (no NVIDIA_VISIBLE_DEVICES=all).
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=build-gpu /opt/venv /opt/venv
COPY model_repository /app/model_repository

# ---------------------------------------------------------------------------------------------
# The CPU image is the default.
FROM cpu AS default

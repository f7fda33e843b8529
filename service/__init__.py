"""The model server: FastAPI app, API dialects, batching and model loading (see ``service.app``)."""

from importlib.metadata import PackageNotFoundError, version

SERVER_NAME = "cnn-serving"
try:
    __version__ = version(SERVER_NAME)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

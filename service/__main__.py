"""``python -m service``: run the server with uvicorn on ``CNN_HOST``:``CNN_PORT``."""

import uvicorn

from service.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    uvicorn.run("service.app:app", host=settings.host, port=settings.port, log_level=settings.log_level.lower())

"""Container health check: exit 0 when the service reports ready (stdlib only; no curl in slim)."""

import os
import sys
import urllib.request

# Run the way TF Serving's image is run (MODEL_NAME set), the server listens where that image does.
port = "8501" if os.environ.get("MODEL_NAME") else os.environ.get("CNN_PORT", "8000")
url = f"http://127.0.0.1:{port}/health/ready"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # connection refused, 503 while loading, timeout
    print(f"not ready: {exc}", file=sys.stderr)
    sys.exit(1)

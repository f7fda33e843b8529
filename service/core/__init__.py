"""The ground every layer stands on: settings (``CNN_*``), the service errors and their status codes,
metrics, the one internal request and result, tensors as sent (dtypes, shapes, sizes) and the JSON and
base64 helpers of the wire formats. Nothing here knows a model, a route or a protocol."""

"""Load and latency benchmark: the served model against the in-process limit, a naive server and LitServe."""

"""Reliability suite: API fuzzing, a bad-input corpus, overload, shutdown, broken models and a soak."""

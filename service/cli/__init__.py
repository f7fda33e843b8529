"""The ``cnn-serving`` command line, above everything else: ``serve`` (every ``CNN_*`` setting as a flag,
TensorFlow Serving's flags with their meaning, configuration errors as one line with exit status 2), and
``predict``, ``summary`` and ``models``, small clients of a running server's public API."""

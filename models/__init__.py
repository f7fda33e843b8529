"""Convolutional networks: architectures, data, training, export and layer summaries.

This package never imports ``service``; the service reads only what :mod:`models.export` writes.
"""

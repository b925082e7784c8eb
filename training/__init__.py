"""Training side of the ReID system: data, the dual-branch model, losses, evaluation.

Importing this package never imports torch. Its torch-free core, :mod:`training.core` (errors,
file I/O, data-set names, image decoding, metrics), is what the serving side reuses.
"""

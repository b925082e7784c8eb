"""Training side of the ReID system: data, the dual-branch model, losses, evaluation.

Importing this package (or its torch-free modules: ``errors``, ``fileio``, ``datasets``,
``evaluation``) never imports torch, so the serving install can reuse them.
"""

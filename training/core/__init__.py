"""The torch-free core that training and serving share.

Rule: modules in this package import only the standard library, numpy, Pillow and tqdm (for
progress bars), and nothing else of ours outside ``training.core``. The serving side
(``export.runtime``, ``index``, ``server``) imports from here and never from the rest of
``training``, so a serving install needs no torch; ``tests/test_core_imports.py`` checks it.

* ``errors``: the user-facing error type and the one-line CLI convention;
* ``fileio``: crash-safe (atomic, fsynced) file writes;
* ``datasets``: the ReID file-name grammar, Market-1501/DukeMTMC-reID layouts;
* ``formats``: the accepted image formats, their file suffixes and media types (one table);
* ``imageio``: the one image decoder used by training, evaluation and serving;
* ``evaluation``: mAP / CMC / mINP under the Market-1501 protocol;
* ``rerank``: k-reciprocal re-ranking (dense, and from FAISS neighbour lists) and alpha query
  expansion;
* ``cores``: how many CPU cores this process may use;
* ``devices``: the ``auto|cpu|cuda`` device vocabulary and its one resolver;
* ``cliargs``: what every ``reid-*`` parser shares (one-line errors, positive counts, ``--device``).
"""

"""dilran-lite: DILRAN (Zhou, Xu, Zhang, arXiv 2212.04661) for multimodal medical image fusion.

Modules by job (each imports only from the rows above it; ``tests/test_package_layout.py``):

- the ground floor: ``errors`` (every exception class), ``settings`` (the one reader of the
  ``DILRAN_*`` environment), ``_io`` (atomic writes, the commit), ``utils`` (devices, seeding);
- the network and its fusion (chapters 2-4, 7): ``model`` (one class per block), ``fusion`` (the
  fixed strategies), ``baselines`` (pixel average and maximum, pyramids, GFF), ``color`` (YCbCr);
- data (chapter 1): ``augment``, ``phantom``, ``data`` (atlas folders, splits, image reading),
  ``download`` (the verified downloader);
- losses and metrics (chapters 5, 8, 10): ``losses`` (Eq. 6-9), ``metrics`` (the field's
  metrics), ``conventions`` (the evaluators papers use), ``surrogates`` (differentiable stand-ins);
- weights and training (chapter 6): ``checkpoint`` (the format), ``weights`` (the shipped
  files), ``train`` (the autoencoder, as named steps), ``learned`` (the learned fusion layer),
  ``pretrained`` (loading weights by name or file);
- running a model (chapters 11, 12): ``tiling`` (tiles and memory), ``inference`` (the one
  fusion interface, writing results), ``fast`` (the fast path);
- results and the book: ``evaluate``, ``experiments/`` (one function per table), ``explorer/``
  (chapter 7's explorer), ``exercises/`` (checks and the grader), ``notebook`` (the setup cell);
- ``cli``: the ``dilran-lite`` command.
"""

__version__ = "0.1.0"

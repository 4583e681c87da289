"""dilran-lite: DILRAN (Zhou, Xu, Zhang, arXiv 2212.04661) for multimodal medical image fusion.

Modules: ``model`` (the network), ``fusion`` (fixed fusion strategies), ``losses`` (Eq. 6-9),
``data`` (atlas pairs, phantom, colour), ``metrics`` (fusion quality), ``train`` (training and
checkpoints), ``cli`` (the ``dilran-lite`` command).
"""

__version__ = "0.1.0"

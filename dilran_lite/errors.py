"""Every exception class of the package.

A ``UserError`` is a problem with what the user gave (a bad file, option or checkpoint). The
command line prints it as one line, ``dilran-lite: error: <message>``, and exits with status 2;
``--debug`` shows the traceback instead. A message says what is wrong, with which file, and what
to do. The subclasses also derive from the built-in class a caller would catch without knowing
this package (``ValueError``, ``FileNotFoundError``, ``RuntimeError``). The modules that raise
them re-export them (``dilran_lite.data.ImageFileError`` etc. keep working).
"""

from __future__ import annotations

__all__ = [
    "UserError",
    "ImageFileError",
    "MissingImageError",
    "SplitFileError",
    "DownloadError",
    "CheckpointError",
    "VGGWeightsUnavailable",
]


class UserError(Exception):
    """A problem with what the user gave: reported in one line, exit status 2, no traceback."""


class ImageFileError(UserError, ValueError):
    """An image file that cannot be read, or holds an unusable image."""


class MissingImageError(UserError, FileNotFoundError):
    """An image a pair or split names is not on disk."""


class SplitFileError(UserError, ValueError):
    """A ``splits.json`` that cannot be read or names unknown pairs."""


class DownloadError(UserError, RuntimeError):
    """A file could not be fetched or did not match its checksum."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: unreadable, of another format, or of another model."""


class VGGWeightsUnavailable(UserError, RuntimeError):
    """ImageNet VGG16 weights (for the perceptual loss) could not be found or downloaded."""

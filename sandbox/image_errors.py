"""The error every image decoder of `pretrained` raises for what a user sent, and the errors
Pillow raises for broken files (`sandbox.images` re-exports `ImageError`)."""

from __future__ import annotations

import struct

__all__ = ["ImageError"]

# Errors Pillow raises for broken files, from the header parsers and from the decoders.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)


class ImageError(ValueError):
    """A user-facing message: what is wrong with the file, in plain words."""

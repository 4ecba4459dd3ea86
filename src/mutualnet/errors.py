"""The one exception type for errors a user can cause.

Everything the user can get wrong (an unknown model, a width outside the trained range, a corrupt
checkpoint, a missing dataset, an impossible budget) raises :class:`MutualNetError` with a message
that says what to do. The command line prints it as one line and exits non-zero; a traceback means
a bug in mutualnet.
"""

__all__ = ["MutualNetError"]


class MutualNetError(Exception):
    """A user-facing error: bad input, not a bug."""

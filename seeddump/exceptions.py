class SeeddumpError(Exception):
    """A failure the user can act on.

    The message is one line that says what happened and what to do; commands turn it into a
    ``CommandError`` so the user sees that line and a non-zero exit, never a traceback.
    """

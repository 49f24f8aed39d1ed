"""The one exception type of the data layer."""


class DataError(ValueError):
    """Bad data or a bad data setting; the message names the file or key at fault.

    The main command prints it without a traceback: every message says what is
    wrong, where, and what to do about it.
    """

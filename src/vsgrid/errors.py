"""The one exception type that the command line reports as a user error."""


class VsgridError(Exception):
    """Bad input or configuration: the message names the file or key and what is wrong.

    The command line prints it without a traceback and exits with status 2; anything else that
    escapes is a bug and keeps its traceback.
    """

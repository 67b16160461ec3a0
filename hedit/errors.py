"""The one exception type hedit raises for bad input; the CLI prints it as a single line."""


class HeditError(Exception):
    """A problem with the user's input or environment, described in one line."""

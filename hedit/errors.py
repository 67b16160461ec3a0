"""The exception types hedit raises for bad input and for signals; the CLI prints each as a single line."""


class HeditError(Exception):
    """A problem with the user's input or environment, described in one line."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived (the CLI turns them into this, as Python does SIGINT into
    KeyboardInterrupt), so that every ``finally`` and cleanup runs before hedit exits."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(signal.Signals(signum).name)

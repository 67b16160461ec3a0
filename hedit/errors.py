"""The exception types hedit raises for bad input and for signals; the CLI prints each as a single line.
``redact`` removes credentials from any text hedit prints."""

import re

# scheme://user:password@host or scheme://token@host: the user-info part of a URL
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"]+@")


def redact(text: str) -> str:
    """``text`` with the user-info of every URL in it replaced by ``***`` (``HF_ENDPOINT`` or a judge URL
    may carry a password: it is never printed)."""
    return _USERINFO.sub(r"\1***@", text)


class HeditError(Exception):
    """A problem with the user's input or environment, described in one line."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived (the CLI turns them into this, as Python does SIGINT into
    KeyboardInterrupt), so that every ``finally`` and cleanup runs before hedit exits."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(signal.Signals(signum).name)

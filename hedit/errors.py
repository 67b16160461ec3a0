"""The exception types hedit raises for bad input and for signals; the CLI prints each as a single line.
``redact`` removes credentials from any text hedit prints."""

import re

# scheme://user:password@host or scheme://token@host: the user-info part of a URL, of any characters up
# to the last "@" before the path (a password may hold quotes, "@", "?" or "#")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]*@")
# a query or fragment parameter whose name says it carries a credential (?access_token=, &api_key=, ...)
_SECRET_PARAM = re.compile(
    r"(?i)([?&;#][a-z0-9_.-]*(?:token|key|secret|passw|pwd|sig|auth|credential|session)[a-z0-9_.-]*=)[^&#\s]*"
)


def redact(text: str) -> str:
    """``text`` with the user-info of every URL in it, and the value of every credential-like query
    parameter, replaced by ``***`` (``HF_ENDPOINT`` or a judge URL may carry a password or a token: it is
    never printed)."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


class HeditError(Exception):
    """A problem with the user's input or environment, described in one line."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived (the CLI turns them into this, as Python does SIGINT into
    KeyboardInterrupt), so that every ``finally`` and cleanup runs before hedit exits."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(signal.Signals(signum).name)

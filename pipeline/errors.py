"""Errors a user can cause. Each carries a one-line message naming the file, key or field."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a problem the user can fix; `cli.py` prints it on one line, no traceback."""


class ConfigError(PipelineError):
    """config.yaml (or an environment reference in it) is wrong."""


class PostError(PipelineError):
    """One post cannot be loaded or rendered; the others go on. `reasons`: every problem found in
    it, so that one pass over the file shows them all."""

    def __init__(self, path: str, message: str, *more: str) -> None:
        self.reasons = (message, *more)
        super().__init__("\n".join(f"{path}: {m}" for m in self.reasons))
        self.path = path
        self.reason = message


class RenderError(PipelineError):
    """A template or an edition cannot be rendered."""


class ChannelError(PipelineError):
    """A send failed. `retryable` tells the orchestrator whether another attempt may succeed.

    `reply_code` and `status` (an RFC 3463 enhanced status code such as "5.1.1") are set when the
    receiving server refused this recipient or this message to them (SMTP: at RCPT, or after the
    end-of-data dot): a bounce, which says something about the address. A refused sender or an
    error of the protocol leaves them None: it says nothing about the recipient."""

    def __init__(self, message: str, *, retryable: bool, unknown: bool = False,
                 retry_after: float | None = None, fatal: bool = False,
                 reply_code: int | None = None, status: str | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        # The channel cannot work at all (unreachable, bad credentials): stop it, send nothing more.
        self.fatal = fatal
        # The request may have reached the remote side: the outcome is not known.
        self.unknown = unknown
        self.retry_after = retry_after
        self.reply_code = reply_code
        self.status = status

    @property
    def bounce(self) -> bool:
        """Whether this failure is the recipient's server refusing the recipient (see above)."""
        return self.reply_code is not None or self.status is not None


class StateError(PipelineError):
    """The state database cannot be used: not ours, damaged, full, read-only or unreachable.
    Every command stops on it: going on could send again what the database says was sent."""

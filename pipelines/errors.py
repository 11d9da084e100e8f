"""Errors that reach the user as one line: what went wrong and what to do about it."""


class QuakecatError(Exception):
    """A runtime failure (exit 1) whose message is fit to show as is."""


class UsageError(QuakecatError):
    """Bad arguments or configuration (exit 2)."""


class BadBody(QuakecatError):
    """A response body that cannot be what the service meant to send; worth fetching again."""


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its first), or its type when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

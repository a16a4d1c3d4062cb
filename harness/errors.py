"""Errors a user can fix: the CLI prints them in one line, without a traceback."""


class UserError(Exception):
    """Bad input or environment; the message says what was wrong and how to fix it."""

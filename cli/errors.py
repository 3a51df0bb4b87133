"""The one error type that reaches the user as a one-line message and exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: a file, a field, a flag. Printed as one line; exit 2.

    Name the file (and row/column or key where it applies) in the message.
    """

    exit_code = 2

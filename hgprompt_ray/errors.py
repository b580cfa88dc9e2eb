"""Shared message templates for user-facing errors.

Every error the library raises on bad input names the field, the value it got, the rule it
broke and the fix. Keeping the wording in one place makes the messages uniform and greppable.
"""

from __future__ import annotations

from typing import Any

__all__ = ["invalid_value", "InvalidValueError", "IntegrityError", "require_positive_flag"]


class InvalidValueError(ValueError):
    """A user-supplied value broke a documented rule."""


class IntegrityError(ValueError):
    """A file on disk is corrupt, truncated, or does not match its recorded checksum."""


def invalid_value(field: str, value: Any, rule: str, fix: str) -> str:
    """Format the house error message.

    Args:
        field: the name of the argument, config field or file entry.
        value: the value that was received.
        rule: what the value must satisfy, e.g. ``"must be positive"``.
        fix: what the user should change.

    Returns:
        ``"<field> <rule>, but got <value!r>. <fix>"``
    """
    text = f"{field} {rule}, but got {value!r}."
    if fix:
        text += f" {fix}"
    return text


def require_positive_flag(flag: str, value: Any, example: int = 2) -> None:
    """Raise InvalidValueError unless ``value`` is a positive integer (a command-line setting).

    The message names the flag as typed (``--<flag>``) and an example value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValueError(
            f"--{flag} must be a positive integer, but got {value}. Fix: pass e.g. --{flag} {example}."
        )

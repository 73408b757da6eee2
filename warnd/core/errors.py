"""The one error hierarchy of warnd.

    WarndError
    ├── InputError            bad input from a file, a feed or a person: never retried.
    │   ├── CapError          a CAP message that cannot be accepted
    │   ├── ContactsError     a contacts directory that cannot be loaded
    │   └── ConfigError       a config file that cannot be used
    ├── StoreError            the database is unusable (e.g. schema older than the code)
    └── DeliveryError         sending a message through a channel failed
        ├── TransientError    may succeed later (429, 5xx, timeout, connection reset): retried
        └── PermanentError    will not succeed (4xx, invalid number): not retried, next channel

Only ``TransientError`` is retried. Every ``InputError`` carries what the user needs to fix
the input (file, line, field, value) and renders as one line.
"""

from __future__ import annotations


class WarndError(Exception):
    """Base of every error warnd raises on purpose."""


class InputError(WarndError):
    """Bad input: names where it is so that a person can fix it, renders as one line."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
        value: object = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        self.value = value
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.source:
            where = self.source
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        what = f"{self.field}: " if self.field else ""
        text = f"{where}{what}{self.message}"
        if self.value is not None:
            shown = repr(self.value) if isinstance(self.value, str) else str(self.value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            text += f" (got {shown})"
        return " ".join(text.split())  # always one line


class CapError(InputError):
    """A CAP document that warnd refuses (malformed, hostile, not CAP, or breaking CAP rules)."""


class ContactsError(InputError):
    """A contacts directory that cannot be loaded."""


class ConfigError(InputError):
    """A config value that cannot be used; ``field`` is the dotted key."""


class StoreError(WarndError):
    """The store cannot be used as it is (wrong schema version, unreachable database)."""


class DeliveryError(WarndError):
    """Sending one outbound message failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class TransientError(DeliveryError):
    """A failure that may pass: retried with backoff."""


class PermanentError(DeliveryError):
    """A failure that retrying will not fix: the next channel (or the ladder) takes over."""

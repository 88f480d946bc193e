"""What a repro file error is, and the schema version it talks about."""

from __future__ import annotations

SCHEMA_VERSION = 1


class ReproError(ValueError):
    """A repro file that cannot be used (malformed, a bad field, a script that changed or is missing).

    The message names the file and the field, and says what to do."""

"""The one error type of ``harness certify``: bad input, found before anything runs (exit code 2)."""

from __future__ import annotations


class CertifyError(ValueError):
    """Bad input to a campaign or a merge; the message says what is wrong and what to do."""

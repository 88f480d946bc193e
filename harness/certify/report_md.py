"""The certificate as Markdown, to paste into a pull request (rendered with Jinja2)."""

from __future__ import annotations

from harness.certify.report_view import view

#: Failures listed in full; the rest are counted (the JSON and HTML reports hold them all).
MAX_FAILURES = 30

TEMPLATE = "certificate.md.j2"


def render(cert: dict) -> str:
    from harness.certify.report_view import environment

    return environment(autoescape=False).get_template(TEMPLATE).render(v=view(cert, max_failures=MAX_FAILURES))


__all__ = ["render", "MAX_FAILURES"]

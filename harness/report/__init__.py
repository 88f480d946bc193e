"""Output of a RunResult: a short rich report for people, one JSON object for machines."""

from .json import render_json
from .text import make_console, render_text

__all__ = ["render_json", "render_text", "make_console"]

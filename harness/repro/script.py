"""What a repro file runs: a script by path, an inline script, or a built-in scenario, with its sha256."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from .errors import ReproError


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Script:
    """What runs: a script path, an inline script (text + file name) or a built-in scenario."""

    sha256: str
    path: str | None = None
    text: str | None = None
    name: str | None = None
    scenario: str | None = None
    args: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "args", tuple(self.args))

    @property
    def kind(self) -> str:
        return "scenario" if self.scenario is not None else "inline" if self.text is not None else "path"

    @property
    def label(self) -> str:
        return self.scenario or self.path or self.name or "?"


def _display_path(path: str) -> str:
    """Relative to the current folder when the script is under it (a report travels with a checkout)."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def _script_for(target, args: tuple[str, ...], *, inline: bool) -> Script:
    if target.builtin:
        if inline:
            raise ReproError(f"--inline embeds a script file, but the target {target.name!r} is a built-in scenario; "
                             f"it is recorded by name (drop --inline)")
        return Script(sha256=sha256_file(scenario_file(target.module)), scenario=target.name, args=args)
    if inline:
        with open(target.script, "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ReproError(f"--inline: {target.script} is not UTF-8 text; record it by path (drop --inline)") \
                from None
        return Script(sha256=hashlib.sha256(data).hexdigest(), text=text, name=os.path.basename(target.script),
                      args=args)
    return Script(sha256=sha256_file(target.script), path=_display_path(target.script), args=args)


def scenario_file(module: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ReproError(f"built-in scenario module {module} is not installed")
    return spec.origin


def check_inline_target(target_name: str, inline: bool) -> None:
    """Refuse, before a run, a --save-repro that could not be written (--inline of a scenario)."""
    if not inline:
        return
    from harness.engine.target import UsageError, resolve_target

    try:
        target = resolve_target(target_name)
    except UsageError:
        return  # the run reports it
    if target.builtin:
        raise ReproError(f"--inline embeds a script file, but the target {target.name!r} is a built-in scenario; "
                         f"it is recorded by name (drop --inline)")

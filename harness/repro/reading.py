"""Typed access to the tables of a repro file: every error names the file and the field, and says what to do."""

from __future__ import annotations

from .errors import SCHEMA_VERSION, ReproError

_MISSING = object()


class _Table:
    """Typed access to one table of the document; every error names the file and the field."""

    def __init__(self, data, name: str, source: str):
        self.name, self.source = name, source
        if not isinstance(data, dict):
            raise self.error(None, f"must be a table ([{name}]), got {_type(data)}")
        self.data = data

    def field(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def error(self, key, why: str) -> ReproError:
        where = f"field {self.field(key)}" if key else f"[{self.name}]"
        return ReproError(f"{self.source}: {where} {why}; fix it in the file, or write the file again with "
                          f"harness run --save-repro")

    def get(self, key, kind, *, required=True, default=None, check=None, what=None):
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise self.error(key, "is missing")
            return default
        ok = isinstance(value, kind) and not (kind in (int, (int, float)) and isinstance(value, bool))
        if not ok:
            raise self.error(key, f"must be {what or _kind_name(kind)}, got {_type(value)} {value!r}")
        if check is not None:
            why = check(value)
            if why:
                raise self.error(key, why)
        return value

    def str_list(self, key, *, required=True) -> tuple[str, ...]:
        value = self.get(key, list, required=required, default=[], what="a list of strings")
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise self.error(key, f"must be a list of strings; item {i} is {_type(v)} {v!r}")
        return tuple(value)

    def str_dict(self, key) -> dict:
        value = self.get(key, dict, required=False, default={}, what="a table of strings")
        for k, v in value.items():
            if not isinstance(v, str):
                raise ReproError(f"{self.source}: field {self.field(key)}.{k} must be a string, got {_type(v)} "
                                 f"{v!r}; fix it in the file")
        return dict(value)

    def table(self, key, *, required=True):
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise self.error(key, "is missing (a table)")
            return None
        return _Table(value, self.field(key), self.source)

    def only(self, *known):
        unknown = sorted(set(self.data) - set(known))
        if unknown:
            raise self.error(unknown[0], f"is unknown in schema {SCHEMA_VERSION} (known here: {', '.join(known)})")


def _type(v) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a float", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _kind_name(kind) -> str:
    if kind == (int, float):
        return "a number"
    return _type(kind()) if isinstance(kind, type) else str(kind)

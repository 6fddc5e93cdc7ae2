"""YAML loading that remembers where each value came from, for errors that name file:line."""

from __future__ import annotations

from pathlib import Path

import yaml


class LineDict(dict):
    """A mapping from YAML that knows its own line and each key's line (1-based)."""

    line: int = 0
    key_lines: dict

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    line: int = 0
    item_lines: list


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    d = LineDict()
    d.line = node.start_mark.line + 1
    d.key_lines = {}
    for knode, vnode in node.value:
        key = loader.construct_object(knode, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(None, None, "keys must be scalars",
                                                    knode.start_mark)
        if key in d:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                    knode.start_mark)
        d[key] = loader.construct_object(vnode, deep=True)
        d.key_lines[key] = knode.start_mark.line + 1
    return d


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(v, deep=True) for v in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [v.start_mark.line + 1 for v in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


class SourceError(Exception):
    """A problem in a YAML source, located by file, line and field."""

    def __init__(self, path: str | Path, line: int, field: str, message: str) -> None:
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")

    def __reduce__(self):
        # Pickled as its four fields: a process pool re-raises a worker's exception in the
        # parent, and the default (``self.args``: the one formatted message) could not
        # rebuild it, which broke the pool and hid the error (bench/loso.py).
        return (type(self), (self.path, self.line, self.field, self.message))


def load(path: str | Path) -> object:
    """Parse a YAML file; syntax errors become :class:`SourceError` with the line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(p, 0, "", f"cannot read: {e}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        raise SourceError(p, line, "", f"YAML syntax: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise SourceError(p, 0, "", f"YAML: {e}") from None

"""YAML reading that remembers where every key came from, and `include:` merging.

The line map lets every validation error point at `file:line`, including keys inherited from an included base.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]


class SpecFileError(Exception):
    """A spec file that cannot be read or parsed (one message, already located)."""


@dataclass
class Source:
    """Merged raw data plus, for each path, the file and 1-based line that set it."""

    data: dict[str, Any]
    lines: dict[Loc, tuple[str, int]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def where(self, loc: Loc) -> tuple[str, int] | None:
        """The closest located ancestor of `loc` (a missing key points at its parent)."""
        for n in range(len(loc), -1, -1):
            hit = self.lines.get(tuple(loc[:n]))
            if hit:
                return hit
        return None


def _walk(node: yaml.Node, loc: Loc, file: str, lines: dict, dupes: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                dupes.append(f"{file}:{key_node.start_mark.line + 1}: duplicate key {'.'.join(map(str, (*loc, key)))}")
            seen.add(key)
            lines[(*loc, key)] = (file, key_node.start_mark.line + 1)
            _walk(value_node, (*loc, key), file, lines, dupes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = (file, item.start_mark.line + 1)
            _walk(item, (*loc, i), file, lines, dupes)


def read_yaml(path: Path) -> Source:
    """Parse one file into data and a line map. Duplicate keys are errors (YAML would keep the last silently)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecFileError(f"{path}: cannot read ({e})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise SpecFileError(f"{where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecFileError(f"{path}: a spec must be a mapping at the top level, got {type(data).__name__}")
    lines: dict[Loc, tuple[str, int]] = {(): (str(path), 1)}
    dupes: list[str] = []
    if node is not None:
        _walk(node, (), str(path), lines, dupes)
    if dupes:
        raise SpecFileError("\n".join(dupes))
    return Source(data=data, lines=lines, files=[path])


def deep_merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key; anything else (lists included) replaces. A null override removes the key."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = deep_merge(out[k], v)
            else:
                out[k] = v
        return out
    return override


def _drop_nulls(data: Any) -> Any:
    """Top-level files treat `key: ~` as 'use the default', the same as in an override."""
    if isinstance(data, dict):
        return {k: _drop_nulls(v) for k, v in data.items() if v is not None}
    return data


def load_source(path: str | Path, _stack: tuple[Path, ...] = ()) -> Source:
    """Read a spec file and resolve its `include:` chain (paths relative to the including file)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, resolved))
        raise SpecFileError(f"{path}: include cycle: {chain}")
    own = read_yaml(path)
    includes = own.data.pop("include", None)
    if includes is None:
        own.data = _drop_nulls(own.data)
        return own
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        line = own.lines.get(("include",), (str(path), 0))[1]
        raise SpecFileError(f"{path}:{line}: include must be a path or a list of paths")
    merged = Source(data={})
    problems = []
    for i, inc in enumerate(includes):
        try:
            base = load_source(path.parent / inc, (*_stack, resolved))
        except SpecFileError as e:  # every include's problem at once, each saying where it was included
            where = own.lines.get(("include", i), own.lines.get(("include",), (str(path), 0)))
            problems.append(f"{e} (included from {where[0]}:{where[1]})")
            continue
        merged.data = deep_merge(merged.data, base.data)
        merged.lines.update(base.lines)
        merged.files.extend(base.files)
    if problems:
        raise SpecFileError("\n".join(problems))
    merged.data = _drop_nulls(deep_merge(merged.data, own.data))
    merged.lines.update({k: v for k, v in own.lines.items() if k[:1] != ("include",)})
    merged.lines[()] = (str(path), 1)
    merged.files.append(path)
    return merged

"""YAML reading that remembers where every key came from, and `include:` merging.

The line map lets every validation error point at `file:line`, including keys inherited from an included base.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[Any, ...]
Pair = tuple[Any, yaml.Node, int, str | None]  # key, value node, line, alias the value was written as

MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"
VALUE_TAG = "tag:yaml.org,2002:value"
# Scalars YAML silently turns into something else than the text written (`yes` -> true, `1.10` -> 1.1).
LOSSY_TAGS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")
# More values than any spec has: nested aliases ("billion laughs") would otherwise expand without bound downstream.
MAX_VALUES = 1_000_000


class SpecFileError(Exception):
    """A spec file that cannot be read or parsed (one message, already located)."""


def format_path(loc: Loc) -> str:
    """`eval.benchmarks[0].name`: the YAML path as the user would write it."""
    out = ""
    for part in loc:
        index = isinstance(part, int) and not isinstance(part, bool)
        out += f"[{part}]" if index else (f".{part}" if out else str(part))
    return out


@dataclass
class Source:
    """Merged raw data plus, for each path, the file and 1-based line that set it."""

    data: dict[str, Any]
    lines: dict[Loc, tuple[str, int]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    # The text written for scalars YAML read as a boolean or float, so errors can quote what the user wrote.
    texts: dict[Loc, str] = field(default_factory=dict)

    def where(self, loc: Loc) -> tuple[str, int] | None:
        """The closest located ancestor of `loc` (a missing key points at its parent)."""
        for n in range(len(loc), -1, -1):
            hit = self.lines.get(tuple(loc[:n]))
            if hit:
                return hit
        return None


class _Loader(yaml.SafeLoader):
    """Records where each alias is used: PyYAML hands back the anchored node, which knows only the anchor's line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_uses: dict[tuple[int, Any], tuple[str, yaml.Mark]] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if index is not None and self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self.alias_uses[_child_key(parent, index)] = (event.anchor, event.start_mark)
        return super().compose_node(parent, index)


def _child_key(parent: yaml.Node | None, index: Any) -> tuple[int, Any]:
    return id(parent), id(index) if isinstance(index, yaml.Node) else index


class _Indexer:
    """One pass over the composed YAML, before PyYAML flattens `<<` merges: lines, duplicate keys, alias misuse.

    Each anchored node is walked once (its lines recorded where it first appears), so nested aliases cost their
    size in the file, not their expanded size.
    """

    def __init__(self, loader: _Loader, file: str) -> None:
        self.loader, self.file = loader, file
        self.lines: dict[Loc, tuple[str, int]] = {}
        self.texts: dict[Loc, str] = {}
        self.problems: dict[str, None] = {}  # ordered, deduplicated
        self.sizes: dict[int, int] = {}  # values each walked collection expands to
        self.active: set[int] = set()  # collections on the current path: meeting one again is a recursive alias
        # Each mapping's pairs with its `<<` merges applied, and the text of its lossy keys: a mapping merged in
        # several places (`<<: [*a, *a]` chains) is resolved once, or a chain of n merges would cost 2**n.
        self.merged: dict[int, tuple[list[Pair], dict[Any, str]]] = {}

    def walk(self, node: yaml.Node, loc: Loc, alias: str | None = None) -> int:
        """Record the lines under `loc`; return how many values `node` expands to."""
        if isinstance(node, yaml.ScalarNode):
            if node.tag in LOSSY_TAGS:
                self.texts.setdefault(loc, node.value)
            return 1
        if id(node) in self.active:
            ref = (
                f"alias *{alias} is used inside its own anchor &{alias}"
                if alias
                else "an alias is used inside its anchor"
            )
            self.problem(loc, f"recursive alias: {ref}; a value cannot contain itself")
            return 1
        if id(node) in self.sizes:
            return self.sizes[id(node)]
        self.active.add(id(node))
        size = 1
        children = self._pairs(node, loc) if isinstance(node, yaml.MappingNode) else self._items(node)
        for key, child, line, child_alias in children:
            self.lines[(*loc, key)] = (self.file, line)
            size += self.walk(child, (*loc, key), child_alias)
        self.active.discard(id(node))
        self.sizes[id(node)] = size
        return size

    def problem(self, loc: Loc, message: str) -> None:
        line = self.lines.get(loc, (self.file, 1))[1]
        self.problems[f"{self.file}:{line}: {format_path(loc) or '<spec>'}: {message}"] = None

    def _use(self, parent: yaml.Node, index: Any, node: yaml.Node) -> tuple[int, str | None]:
        use = self.loader.alias_uses.get(_child_key(parent, index))
        return ((use[1] if use else node.start_mark).line + 1), (use[0] if use else None)

    def _items(self, node: yaml.SequenceNode) -> list[Pair]:
        return [(i, item, *self._use(node, i, item)) for i, item in enumerate(node.value)]

    def _key(self, key_node: yaml.Node) -> Any:
        if not isinstance(key_node, yaml.ScalarNode):
            return f"<{key_node.id}>"  # constructing the document reports the unhashable key
        if key_node.tag in (STR_TAG, VALUE_TAG):  # PyYAML reads a `=` key as text too
            return key_node.value
        return self.loader.construct_object(key_node)

    def _pairs(self, node: yaml.MappingNode, loc: Loc) -> list[Pair]:
        """(key, value node, line, alias) of a mapping with its `<<` merges applied: keys written in the mapping
        override merged ones; only a key written twice in the same mapping is a duplicate. Memoized by node."""
        if id(node) not in self.merged:
            self.merged[id(node)] = self._merge(node, loc)
        pairs, lossy = self.merged[id(node)]
        for key, text in lossy.items():
            self.texts.setdefault((*loc, key), text)
        return pairs

    def _merge(self, node: yaml.MappingNode, loc: Loc) -> tuple[list[Pair], dict[Any, str]]:
        own: dict[Any, tuple[yaml.Node, int, str | None]] = {}
        merged: dict[Any, tuple[yaml.Node, int, str | None]] = {}
        own_lossy: dict[Any, str] = {}
        merged_lossy: dict[Any, str] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        continue  # constructing the document reports what cannot be merged
                    if id(source) in self.active:
                        self.problem(loc, "recursive merge: `<<` merges a mapping into itself")
                        continue
                    self.active.add(id(source))
                    merged.update({k: (v, ln, a) for k, v, ln, a in self._pairs(source, loc)})
                    merged_lossy.update(self.merged[id(source)][1])
                    self.active.discard(id(source))
                continue
            key = self._key(key_node)
            if key in own:
                where = f"{self.file}:{key_node.start_mark.line + 1}"
                self.problems[f"{where}: duplicate key {format_path((*loc, key))}"] = None
            if key_node.tag in LOSSY_TAGS:
                own_lossy[key] = key_node.value
            own[key] = (value_node, key_node.start_mark.line + 1, self._use(node, key_node, value_node)[1])
        pairs = [(k, *v) for k, v in {**merged, **own}.items()]
        return pairs, {**merged_lossy, **own_lossy}


def read_yaml(path: Path) -> Source:
    """Parse one file into data and a line map. Duplicate keys are errors (YAML would keep the last silently)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecFileError(f"{path}: cannot read ({e})") from None
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:  # a control character, refused before parsing starts
        line = text[: e.position].count("\n") + 1
        raise SpecFileError(f"{path}:{line}: invalid YAML: {e.reason} (character {e.character!r})") from None
    index = _Indexer(loader, str(path))
    index.lines[()] = (str(path), 1)
    try:
        node = loader.get_single_node()
        if node is not None and index.walk(node, ()) > MAX_VALUES:
            index.problem((), f"its aliases expand to more than {MAX_VALUES:,} values (nested aliases?)")
        if index.problems:
            raise SpecFileError("\n".join(index.problems))
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise SpecFileError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise SpecFileError(f"{path}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecFileError(f"{path}: a spec must be a mapping at the top level, got {type(data).__name__}")
    return Source(data=data, lines=index.lines, files=[path], texts=index.texts)


@dataclass(frozen=True)
class NullRules:
    """What a null means, which only the schema knows (`framework.spec.fields.null_rules`)."""

    drop: Callable[[dict[str, Any]], dict[str, Any]]  # one file's data without the nulls that mean "the default"
    means_none: Callable[[Loc], bool]  # whether a null left at this path replaces an earlier file's value


def deep_merge(base: Any, override: Any, means_none: Callable[[Loc], bool] | None = None, loc: Loc = ()) -> Any:
    """Mappings merge key by key; anything else (lists included) replaces.

    A null override replaces the inherited value where `means_none(path)` says it is a value ("none": `qos: ~` in
    a Slurm stage override); otherwise it removes the inherited key (a level or extra argument an earlier file
    set), and a null for a key the base lacks stays (a level with no parameters). The nulls that mean "the
    default" never get here: `load_source` drops them file by file (`NullRules.drop`)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            if v is None and k in out and not (means_none and means_none((*loc, k))):
                out.pop(k)
            elif k in out:
                out[k] = deep_merge(out[k], v, means_none, (*loc, k))
            else:
                out[k] = v
        return out
    return override


def _dropped(before: Any, after: Any, loc: Loc = ()) -> list[Loc]:
    """The paths of `before` that `after` no longer has (the keys `NullRules.drop` dropped)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [p for k, v in before.items() for p in (_dropped(v, after[k], (*loc, k)) if k in after else [(*loc, k)])]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for i, (b, a) in enumerate(zip(before, after)) for p in _dropped(b, a, (*loc, i))]
    return []


def _without_default_nulls(source: Source, nulls: NullRules | None) -> Source:
    """`source` without the nulls that mean "the default", nor a line for them (an error about such a key then
    points at the file that did set it)."""
    if nulls is None:
        return source
    data = nulls.drop(source.data)
    gone = set(_dropped(source.data, data))
    if gone:
        source.lines = {k: v for k, v in source.lines.items() if not any(k[:n] in gone for n in range(1, len(k) + 1))}
    source.data = data
    return source


def load_source(path: str | Path, _stack: tuple[Path, ...] = (), *, nulls: NullRules | None = None) -> Source:
    """Read a spec file and resolve its `include:` chain (paths relative to the including file).

    With `nulls` (`load_spec` passes the schema's), a file's `key: ~` acts on the files it includes, whichever
    file it is in: a null that means "the default" removes the value they set (the field takes its default), a
    null that means "none" (a Slurm stage override) replaces it. It never reaches the file that includes this
    one, so a later sibling include cannot erase an earlier one's value. Without, every null is kept.
    """
    path = Path(path)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise SpecFileError(f"{path}: cannot read ({e})") from None
    if resolved in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, resolved))
        raise SpecFileError(f"{path}: include cycle: {chain}")
    own = read_yaml(path)
    includes = own.data.pop("include", None)
    if includes is None:
        return _without_default_nulls(own, nulls)
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        line = own.lines.get(("include",), (str(path), 0))[1]
        raise SpecFileError(f"{path}:{line}: include must be a path or a list of paths")
    merged = Source(data={})
    means_none = nulls.means_none if nulls else None
    problems = []
    for i, inc in enumerate(includes):
        try:
            base = load_source(path.parent / inc, (*_stack, resolved), nulls=nulls)
        except SpecFileError as e:  # every include's problem at once, each saying where it was included
            where = own.lines.get(("include", i), own.lines.get(("include",), (str(path), 0)))
            problems.append(f"{e} (included from {where[0]}:{where[1]})")
            continue
        merged.data = deep_merge(merged.data, base.data, means_none)
        merged.lines.update(base.lines)
        merged.texts.update(base.texts)
        merged.files.extend(base.files)
    if problems:
        raise SpecFileError("\n".join(problems))
    # This file's nulls act on what its own includes set: "the default" removes their value, "none" replaces
    # it. What is left then reads as in a file without includes; a sibling include never sees these nulls.
    merged.data = deep_merge(merged.data, own.data, means_none)
    merged.lines.update({k: v for k, v in own.lines.items() if k[:1] != ("include",)})
    merged.texts.update(own.texts)
    merged.lines[()] = (str(path), 1)
    merged.files.append(path)
    return _without_default_nulls(merged, nulls)

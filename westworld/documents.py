"""Reading a YAML or JSON document someone else wrote, refusing what could hang, exhaust or mislead us.

Every input file (a proposal, an experiment spec, a canary rollout, the network policy) passes through
:func:`parse_document`, which takes the bytes (or text) and returns the data, or raises one
:class:`~westworld.errors.InvalidInput` naming the source and where in it the problem is:

- not UTF-8 (``policy.yaml: not UTF-8 at byte 17``), or larger than ``Limits.max_bytes``;
- malformed YAML/JSON, with its line and column;
- a key given twice in one mapping (YAML would silently keep the last one), with both lines;
- "billion laughs": more than ``Limits.max_aliases`` aliases, an alias that refers to itself, or aliases that
  expand to more than ``Limits.max_nodes`` values;
- nested deeper than ``Limits.max_depth`` (in the text, or once aliases are expanded);
- a scalar that cannot be built (an integer of thousands of digits, ``2026-13-45``), with its line.

The checks run while the document is composed, before anything is expanded: a hostile document is refused
after reading at most ``max_bytes``, in time linear in its size. Only YAML's safe types are built (no
``!!python/...`` tags). Durations read from documents are bounded by :data:`MAX_DURATION`
(:func:`duration_problem`, :func:`out_of_range`), and numbers must be finite.

Pure: no I/O beyond taking the bytes; libyaml's event parser is used when present (it is several times
faster), PyYAML's own otherwise, with the same checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from westworld.errors import DocumentRefused, InvalidInput


class _PyParser(Reader, Scanner, Parser):
    """PyYAML's own event parser (pure Python)."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


try:  # libyaml's event parser (C), several times faster, under the same composer (the checks need it in Python)
    from yaml._yaml import CParser as _FastParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _FastParser = _PyParser  # type: ignore[assignment,misc]


MAX_DURATION = timedelta(days=3650)
"""The longest duration any input may give (10 years): windows, bakes, timeouts and waits are all far shorter."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
# What PyYAML's safe constructors raise, besides YAMLError, on a scalar they cannot build.
_BUILD_ERRORS = (ValueError, ArithmeticError, LookupError, TypeError)


@dataclass(frozen=True)
class Limits:
    """What one input document may contain. The defaults are far above any real spec, proposal or policy."""

    max_bytes: int = 256 * 1024
    max_depth: int = 64
    max_aliases: int = 100
    max_nodes: int = 100_000


LIMITS = Limits()


@dataclass(frozen=True)
class Document:
    """The parsed data and the composed node tree (lines of each value, for error messages)."""

    data: Any
    root: Node | None


def decode_utf8(content: bytes, source: str) -> str:
    """The text of ``content``; InvalidInput ``SOURCE: not UTF-8 at byte N`` otherwise."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{_at(source, None)}not UTF-8 at byte {err.start} ({err.reason})") from err


def parse_document(content: bytes | str, source: str = "<input>", limits: Limits = LIMITS, *,
                   pure_python: bool = False) -> Document:
    """Parse one YAML or JSON document within ``limits``; InvalidInput naming ``source`` and the place otherwise.

    ``pure_python`` uses PyYAML's own parser instead of libyaml's (what runs where libyaml is not installed).
    """
    if len(content) > limits.max_bytes:
        unit = "bytes" if isinstance(content, bytes) else "characters"
        raise InvalidInput(f"{_at(source, None)}larger than the {limits.max_bytes} {unit} an input document may "
                           "have")
    text = decode_utf8(content, source) if isinstance(content, bytes) else content
    loader: _Checks | None = None
    try:
        loader = (_PyLoader if pure_python else _Loader)(text, source, limits)
        root = loader.get_single_node()
        if root is None:
            return Document(None, None)
        _check_expansion(root, source, limits)
        return Document(loader.construct_document(root), root)
    except DocumentRefused as err:
        raise InvalidInput(f"{_at(source, err.mark)}{err.message}") from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = (err.problem or err.context or "malformed").removeprefix("but ")
        context = f" ({err.context} at line {err.context_mark.line + 1})" \
            if err.context and err.problem and err.context_mark else ""
        raise InvalidInput(f"{_at(source, mark)}malformed YAML/JSON: {problem}{context}") from err
    except ReaderError as err:  # a character YAML does not allow (NUL, other control characters)
        code = err.character if isinstance(err.character, int) else ord(err.character)
        raise InvalidInput(f"{_at(source, None)}malformed YAML/JSON: character #x{code:04x} at position "
                           f"{err.position} is not allowed ({err.reason})") from err
    except yaml.YAMLError as err:
        raise InvalidInput(f"{_at(source, None)}malformed YAML/JSON: {err}") from err
    finally:
        if loader is not None:
            loader.dispose()


def load_document(content: bytes | str, source: str = "<input>", limits: Limits = LIMITS) -> Any:
    """The data of :func:`parse_document`."""
    return parse_document(content, source, limits).data


def _short(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _at(source: str, mark: yaml.Mark | None) -> str:
    """``source:line:column: `` (``line L:C: `` without a source), the prefix of a message."""
    if mark is None:
        return f"{source}: " if source else ""
    return f"{source or 'line '}{':' if source else ''}{mark.line + 1}:{mark.column + 1}: "


class _Checks(Composer, SafeConstructor, Resolver):
    """The composer with the limits and the duplicate-key check, and a constructor whose errors have a place."""

    def __init__(self, source: str, limits: Limits) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._limits, self._source = limits, source
        self._depth = self._aliases = 0

    if TYPE_CHECKING:  # given by the parser it is mixed with
        def check_event(self, *choices: Any) -> bool: ...
        def peek_event(self) -> Any: ...

    def dispose(self) -> None:
        self.anchors = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > self._limits.max_aliases:
                raise DocumentRefused(f"more than {self._limits.max_aliases} aliases (*name): refused as a possible "
                                      "alias bomb", self._mark())
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self._limits.max_depth:
            raise DocumentRefused(f"nested deeper than {self._limits.max_depth} levels", self._mark())
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, MappingNode):
            _check_duplicate_keys(node)
        return node

    def _mark(self) -> Any:
        event = self.peek_event()
        return event.start_mark if event is not None else None

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except _BUILD_ERRORS as err:  # int('9' * 5000), !!int '', date(2026, 13, 45), ...
            what = _short(node.value) if isinstance(node, ScalarNode) else "this collection"
            raise ConstructorError(None, None, f"cannot read {what}: {str(err).split(';')[0]}",
                                   node.start_mark) from err


class _Loader(_Checks, _FastParser):
    def __init__(self, text: str, source: str, limits: Limits) -> None:
        _FastParser.__init__(self, text)
        _Checks.__init__(self, source, limits)


class _PyLoader(_Checks, _PyParser):
    def __init__(self, text: str, source: str, limits: Limits) -> None:
        _PyParser.__init__(self, text)
        _Checks.__init__(self, source, limits)


def _check_duplicate_keys(node: MappingNode) -> None:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        key = _key(key_node)
        if key in seen:
            raise DocumentRefused(f"duplicate key {_short(key_node.value)} (first at line {seen[key].line + 1}); a key "
                                  "may appear once in a mapping", key_node.start_mark)
        seen[key] = key_node.start_mark


def _key(node: ScalarNode) -> Any:
    """The key as the loaded mapping will hold it (``1``, ``0x1`` and ``true`` are one key, as in a Python dict);
    its tag and text if it cannot be read (the constructor reports that)."""
    if node.tag == "tag:yaml.org,2002:str":
        return node.value
    try:
        key = SafeConstructor().construct_object(node)
        hash(key)
    except (yaml.YAMLError, *_BUILD_ERRORS):
        return (node.tag, node.value)
    return key


def _check_expansion(root: Node, source: str, limits: Limits) -> None:
    """Refuse aliases that refer to themselves or expand past ``max_nodes`` values or ``max_depth`` levels.

    Each node is visited once (its expanded size and height are remembered), so this is linear in the text.
    """
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values once expanded, height)
    open_: set[int] = set()

    def visit(node: Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in done:
            size, height = done[key]
            if depth + height - 1 > limits.max_depth:
                raise DocumentRefused(f"nested deeper than {limits.max_depth} levels once aliases are expanded",
                                      node.start_mark)
            return size, height
        if key in open_:
            raise DocumentRefused("an alias refers to the collection that contains it (a recursive document)",
                                  node.start_mark)
        if depth > limits.max_depth:
            raise DocumentRefused(f"nested deeper than {limits.max_depth} levels once aliases are expanded",
                                  node.start_mark)
        open_.add(key)
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        size, height = 1, 1
        for child in children:
            s, h = visit(child, depth + 1)
            size, height = size + s, max(height, h + 1)
            if size > limits.max_nodes:
                raise DocumentRefused(f"expands to more than {limits.max_nodes} values (aliases included): refused as "
                                      "a possible alias bomb", node.start_mark)
        open_.discard(key)
        done[key] = (size, height)
        return size, height

    visit(root, 1)


# -- durations -----------------------------------------------------------------------------------------------

def duration_problem(value: timedelta | float, *, allow_negative: bool = False) -> str | None:
    """Why ``value`` (a timedelta, or a number of seconds) is not an acceptable duration, or None.

    Every duration is finite and at most :data:`MAX_DURATION` long (either way when ``allow_negative``); the
    message says what is wrong and the allowed range.
    """
    allowed = f"allowed: {'at most' if allow_negative else '0s to'} {MAX_DURATION.days}d, i.e. 10 years"
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, float) and not math.isfinite(value):
        return f"is not a finite duration ({allowed})"
    if value < 0 and not allow_negative:
        return f"is negative ({allowed})"
    if abs(value) > MAX_DURATION.total_seconds():  # an int of any size compares exactly with the float bound
        return f"is longer than 10 years ({allowed})"
    return None


def out_of_range(model: BaseModel) -> list[str]:
    """``path: problem`` for every duration anywhere in ``model`` that is negative or longer than 10 years, and
    every number that is not finite (``.inf``, ``.nan``: a threshold of NaN would never trip)."""
    out: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            out.append(f"{path or '(top)'}: {value} is not a finite number")
        elif isinstance(value, timedelta):
            if problem := duration_problem(value):
                seconds = value.total_seconds()
                shown = f"{int(seconds)}s" if seconds.is_integer() else f"{seconds}s"
                out.append(f"{path or '(top)'}: {shown} {problem}")
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{path}.{name}" if path else name)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for k, item in value.items():
                walk(item, f"{path}.{k}" if path else str(k))

    walk(model, "")
    return out

"""Strict reading of one profile file into plain data.

PyYAML's safe_load is too forgiving for a file people edit by hand: the last
of two duplicate keys wins silently, YAML 1.1 turns unquoted `1:30` into 90,
`010` into 8 and `no` into False, a few lines of anchors expand to billions
of values, and deep nesting raises RecursionError. This reader builds the
data from the parser's event stream itself (no recursion), so it can refuse
each of those with the key path, and it opens only regular files of bounded
size (a FIFO would block the render forever).

Values keep their YAML types (the model decides what each key needs); only
forms whose meaning differs between YAML 1.1 and what a reader expects are
refused here, with a hint to quote them.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from charts.schema import show

MAX_BYTES = 1 << 20
# Profiles nest about five levels; this leaves room and stops runaway input.
MAX_DEPTH = 20
# Values built, counting every alias at its full expanded size: a profile has
# a few hundred, billion-laughs input has billions.
MAX_VALUES = 20_000
# Longest plain integer accepted (int64 has 19 digits); longer is refused
# before Python converts it (int() of huge digit strings is slow or refused).
MAX_INT_DIGITS = 20

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_KEY_CHARS = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")

_resolver = Resolver()
_constructor = SafeConstructor()
_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlReadError(Exception):
    """The file cannot be used as a profile. `key` is the dotted key path, if any."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.message = message
        self.key = key


class SourceFloat(float):
    """A float that remembers how it was written, so a message can show `1.10`, not 1.1."""

    text: str

    def __new__(cls, value: float, text: str) -> SourceFloat:
        made = super().__new__(cls, value)
        made.text = text
        return made


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of one YAML file, or YamlReadError."""
    return parse_mapping(_read_text(Path(path)))


def _read_text(path: Path) -> str:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise YamlReadError(f"is a symbolic link to a missing file ({os.readlink(path)})") from None
        raise YamlReadError("profile file is missing") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise YamlReadError("is a symbolic link loop") from None
        raise YamlReadError(f"cannot read file: {err.strerror}") from None
    kind = _not_regular(info.st_mode)
    if kind:
        raise YamlReadError(f"is {kind}, not a regular file")
    if info.st_size > MAX_BYTES:
        raise YamlReadError(f"is {info.st_size} bytes; a profile may have at most {MAX_BYTES} (1 MiB)")
    try:
        # O_NONBLOCK: if the path became a FIFO after the check, reading
        # returns at once instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as err:
        raise YamlReadError(f"cannot read file: {err.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        kind = _not_regular(os.fstat(handle.fileno()).st_mode)
        if kind:
            raise YamlReadError(f"is {kind}, not a regular file")
        raw = handle.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise YamlReadError(f"is larger than {MAX_BYTES} bytes (1 MiB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YamlReadError(f"cannot read file: not UTF-8 text (byte {err.start})") from None
    return text.removeprefix("\ufeff")


def _not_regular(mode: int) -> str:
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _line(event: Any) -> int:
    return int(event.start_mark.line) + 1


class _Collection:
    """A mapping or sequence being built, with what its next event means."""

    def __init__(self, value: dict[str, Any] | list[Any], path: str, anchor: str | None) -> None:
        self.value = value
        self.path = path
        self.anchor = anchor
        self.size = 1
        self.key: str | None = None  # a mapping's pending key (None: a key comes next)
        self.key_lines: dict[str, int] = {}
        self.merging = False  # the pending key is the YAML merge key `<<`
        self.merges: list[dict[str, Any]] = []

    def child_path(self) -> str:
        if isinstance(self.value, list):
            return _join(self.path, len(self.value))
        return _join(self.path, self.key or "<<")


def parse_mapping(text: str) -> dict[str, Any]:
    if not text.strip():
        raise YamlReadError("the file is empty")
    builder = _Builder()
    try:
        for event in yaml.parse(text, Loader=_Parser):
            builder.feed(event)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = err.problem or err.context or "not valid YAML"
        raise YamlReadError(f"malformed YAML: {where}{problem}") from None
    except yaml.YAMLError as err:
        raise YamlReadError(f"malformed YAML: {str(err).splitlines()[0]}") from None
    if builder.documents == 0 or builder.root is None:
        raise YamlReadError("the file is empty")
    if not isinstance(builder.root, dict):
        raise YamlReadError(f"the top level must be a mapping of keys (got a {_kind(builder.root)})")
    return builder.root


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return "single value"


class _Builder:
    def __init__(self) -> None:
        self.stack: list[_Collection] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.root: Any = None
        self.documents = 0
        self.values = 0

    def feed(self, event: Any) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise YamlReadError(f"holds more than one YAML document (another starts at line {_line(event)});"
                                    " a profile is one document")
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            self._open(event)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            self._close()
        elif isinstance(event, yaml.ScalarEvent):
            self._scalar(event)
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event)

    def _path(self) -> str:
        return self.stack[-1].child_path() if self.stack else ""

    def _expects_key(self) -> bool:
        top = self.stack[-1] if self.stack else None
        return top is not None and isinstance(top.value, dict) and top.key is None and not top.merging

    def _open(self, event: Any) -> None:
        path = self._path()
        if self._expects_key():
            raise YamlReadError("a key must be text, not a list or mapping", self.stack[-1].path)
        wanted = _MAP if isinstance(event, yaml.MappingStartEvent) else _SEQ
        if event.tag not in (None, "!", wanted):
            raise YamlReadError(f"the tag {_show_tag(event.tag)} is not supported here", path)
        if len(self.stack) >= MAX_DEPTH:
            raise YamlReadError(f"nested more than {MAX_DEPTH} levels deep", path)
        value: dict[str, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
        self.stack.append(_Collection(value, path, event.anchor))

    def _close(self) -> None:
        done = self.stack.pop()
        if isinstance(done.value, dict):
            # Explicit keys win over merged ones; earlier merges win over later ones.
            for merged in done.merges:
                for key, item in merged.items():
                    done.value.setdefault(key, item)
        self._add(done.value, done.size, done.anchor)

    def _alias(self, event: Any) -> None:
        if event.anchor not in self.anchors:
            raise YamlReadError(f"the alias *{event.anchor} refers to no anchor defined before it"
                                " (or to the collection that contains it)", self._path())
        value, size = self.anchors[event.anchor]
        if self._expects_key():
            raise YamlReadError(f"a key must be text, not the alias *{event.anchor}", self.stack[-1].path)
        self._add(value, size, None)

    def _scalar(self, event: Any) -> None:
        if self._expects_key():
            self._key(event)
            return
        value = _scalar_value(event, self._path())
        self._add(value, 1, event.anchor)

    def _key(self, event: Any) -> None:
        top = self.stack[-1]
        text = event.value
        tag = _tag_of(event)
        if tag == "tag:yaml.org,2002:merge":
            top.merging = True
            return
        if tag != _STR:
            kind = _SCALAR_KINDS.get(tag, "value")
            raise YamlReadError(f"a key must be text, but {show(text)} is read as a {kind}; put it in quotes",
                                _join(top.path, _show_key(text)))
        if not _KEY_CHARS.fullmatch(text):
            raise YamlReadError(f"the key {ascii(text)[:60]} {_bad_key_reason(text)}",
                                _join(top.path, _show_key(text)))
        if text in top.key_lines:
            raise YamlReadError(f"duplicate key (also at line {top.key_lines[text]}; the last one would win silently)",
                                _join(top.path, text))
        top.key_lines[text] = _line(event)
        top.key = text

    def _add(self, value: Any, size: int, anchor: str | None) -> None:
        self.values += size
        if self.values > MAX_VALUES:
            raise YamlReadError(f"expands to more than {MAX_VALUES} values (anchors and aliases included)",
                                self._path())
        if anchor:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.value, list):
            top.value.append(value)
        elif top.merging:
            top.merging = False
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(source, dict) for source in sources):
                raise YamlReadError("the merge key << needs a mapping or a list of mappings", top.path)
            top.merges.extend(sources)
        else:
            assert top.key is not None
            top.value[top.key] = value
            top.key = None


_SCALAR_KINDS = {
    "tag:yaml.org,2002:bool": "boolean",
    "tag:yaml.org,2002:int": "number",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:null": "null (nothing)",
    "tag:yaml.org,2002:timestamp": "date",
    "tag:yaml.org,2002:merge": "merge key",
    "tag:yaml.org,2002:value": "value marker",
}


def _tag_of(event: Any) -> str:
    if event.tag in (None, "!"):
        if event.tag == "!" or not event.implicit[0]:
            return _STR  # quoted or explicitly non-specific: text
        return str(_resolver.resolve(ScalarNode, event.value, (True, False)))
    return str(event.tag)


def _scalar_value(event: Any, path: str) -> Any:
    text: str = event.value
    if event.tag not in (None, "!", _STR):
        # Only !!str is honoured: other tags would bypass the checks below.
        raise YamlReadError(f"the tag {_show_tag(event.tag)} is not supported (got {show(text)})", path)
    tag = _tag_of(event)
    if tag == _STR:
        return text
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise YamlReadError(f"{show(text)} is read as a boolean by YAML 1.1: write true or false,"
                            " or put the text in quotes", path)
    if tag == "tag:yaml.org,2002:int":
        if _PLAIN_INT.fullmatch(text):
            if len(text.lstrip("+-")) > MAX_INT_DIGITS:
                raise YamlReadError(f"the number is too large (got {text[:30]}...)", path)
            return int(text)
        meaning = _yaml11_int(text)
        raise YamlReadError(f"{show(text)} is read as the number {meaning} by YAML 1.1 (octal, hex, base 60"
                            " or digits with '_'); write plain digits, or put the text in quotes", path)
    if tag == "tag:yaml.org,2002:float":
        if _PLAIN_FLOAT.fullmatch(text) and len(text) <= 40:
            number = float(text)
            if number not in (float("inf"), float("-inf")):
                return SourceFloat(number, text)
        raise YamlReadError(f"{show(text)} is not a finite decimal number (YAML 1.1 reads .inf, .nan,"
                            " base 60 and '_' forms as numbers); put the text in quotes", path)
    if tag == "tag:yaml.org,2002:timestamp":
        raise YamlReadError(f"{show(text)} is read as a date by YAML; put it in quotes", path)
    raise YamlReadError(f"{show(text)} has a special meaning in YAML; put it in quotes", path)


def _yaml11_int(text: str) -> str:
    """What YAML 1.1 makes of an integer-like text, for the message."""
    try:
        return str(_constructor.construct_yaml_int(ScalarNode("tag:yaml.org,2002:int", text))) \
            if len(text) <= 40 else "a number"
    except ValueError:  # e.g. 0x_ matches the resolver but has no digits
        return "a number"


def _show_key(key: str) -> str:
    """A key as it may appear in a key path: escaped when not plain ASCII, shortened."""
    shown = ascii(key)[1:-1] if key else "''"
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _show_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _bad_key_reason(key: str) -> str:
    for char in key:
        if not ("\x21" <= char <= "\x7e" or char == " "):
            name = unicodedata.name(char, "a control character")
            return f"contains {name} (U+{ord(char):04X}); keys are plain ASCII"
    if not key:
        return "is empty"
    return "has leading, trailing or repeated spaces"

"""Untrusted values: the one parser of everything read from etcd, and the one way to quote it.

Everything stored under ``{ns}/`` is written by others (DR agents, the inventory platform, operators
with ``etcdctl``). ``loads`` is total: any value, of any size, depth, encoding or type, either
parses or raises ``UntrustedValueError`` (a ``ValueError``) whose message says what is wrong in a
bounded text. Nothing else escapes it: no ``RecursionError`` from deep nesting (the depth is
bounded before the C decoder runs), no ``MemoryError`` from a huge value (the size is bounded
first), no ``UnicodeDecodeError``. Refused, beyond what ``json.loads`` refuses:

* values over ``MAX_VALUE_BYTES`` bytes, and nesting deeper than ``MAX_DEPTH``;
* bytes that are not UTF-8, a byte order mark, ``\\u`` escapes of lone surrogates (text that
  cannot be written back as UTF-8);
* ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON), and an object with a key twice (which of
  the two counts is ambiguous).

``quote`` renders any value (bytes, text, or a parsed value however deep) as at most
``QUOTE_CHARS`` characters plus its size: what error texts, log fields and ``/status`` carry.
"""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any

#: the largest value parsed, in bytes (etcd's own default request limit is 1.5 MiB; the worker's
#: inputs are a few hundred bytes, a record carries at most twice a 64 KiB ``dr_site``)
MAX_VALUE_BYTES = 1024 * 1024
#: the deepest nesting of arrays and objects parsed (the worker's values nest 1 level)
MAX_DEPTH = 32
#: characters of a value an error text quotes
QUOTE_CHARS = 48


class UntrustedValueError(ValueError):
    """UntrustedValueError: a value read from etcd is not one the worker accepts; the message
    says why in a bounded text (it quotes at most a short prefix of the value, plus its size)."""


def _refuse_constant(name: str) -> Any:
    raise UntrustedValueError(f"{name} is not JSON")


class _DuplicateKey(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"key {quote(key)} appears twice")
            seen.add(key)
    return data


def _finite(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise UntrustedValueError(f"number {quote(text)} is out of range")
    return value


_INF = float("inf")
_decoder = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_pairs, parse_float=_finite)
_scan = _decoder.scan_once  # type: ignore[attr-defined]  # exists, untyped in typeshed
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[^\[\]{}]+")
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")

_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = QUOTE_CHARS
_repr.maxother = QUOTE_CHARS
_repr.maxlist = _repr.maxdict = _repr.maxtuple = _repr.maxset = 4


def size_of(value: Any) -> int:
    """The size in bytes of a raw value (UTF-8 for text)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    return 0


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """A bounded rendering of any value: a short prefix, and the size when it was cut."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value[: limit * 4])
        text = raw.decode("utf-8", "backslashreplace")
        size = len(value)
    elif isinstance(value, str):
        text, size = value, None
    else:
        try:
            return _repr.repr(value)[: limit * 2]
        except Exception:  # noqa: BLE001 - a value's repr is never a reason to fail
            return f"<{type(value).__name__}>"
    cut = len(text) > limit or (size is not None and size > len(raw))
    shown = repr(text[:limit])
    if not cut:
        return shown
    total = size if size is not None else size_of(text)
    return f"{shown}... ({total} bytes)"


def _depth(text: str, limit: int) -> int:
    """The nesting depth of JSON ``text`` (strings skipped), counted only up to ``limit + 1``."""
    brackets = _BRACKETS.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def _no_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise UntrustedValueError(f"text {quote(item)} holds a lone surrogate (not UTF-8)") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def text_of(raw: bytes | str, what: str = "value", *, max_bytes: int = MAX_VALUE_BYTES) -> str:
    """``raw`` as text: UTF-8, within ``max_bytes``, without a byte order mark."""
    size = len(raw) if not isinstance(raw, str) else len(raw)  # str: chars, a lower bound of bytes
    if size > max_bytes:
        raise UntrustedValueError(f"{what} is {size} bytes, over the bound of {max_bytes}")
    if isinstance(raw, str):
        text = raw
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UntrustedValueError(f"{what} holds a lone surrogate (not UTF-8)") from None
    else:
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UntrustedValueError(f"{what} is not UTF-8 (byte {exc.start} of {len(raw)}): "
                                      f"{quote(raw)}") from None
    if text.startswith("\ufeff"):
        raise UntrustedValueError(f"{what} starts with a byte order mark")
    return text


def loads(raw: bytes | str, what: str = "value", *, max_bytes: int = MAX_VALUE_BYTES,
          max_depth: int = MAX_DEPTH) -> Any:
    """Parse one untrusted JSON value (see the module doc); ``UntrustedValueError`` if refused."""
    text = text_of(raw, what, max_bytes=max_bytes)
    if text.count("[") + text.count("{") > max_depth and _depth(text, max_depth) > max_depth:
        raise UntrustedValueError(f"{what} nests deeper than {max_depth} levels ({size_of(raw)} bytes)")
    try:
        try:
            value, end = _scan(text, 0)  # the C scanner alone when the text is one bare value
        except StopIteration:
            value, end = _decoder.decode(text), len(text)
        if end != len(text):
            value = _decoder.decode(text)
    except UntrustedValueError as exc:
        raise UntrustedValueError(f"{what} is not valid JSON: {exc}") from None
    except _DuplicateKey as exc:
        raise UntrustedValueError(f"{what} is ambiguous: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UntrustedValueError(f"{what} is not valid JSON: {exc.msg} at char {exc.pos} "
                                  f"of {quote(text)}") from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise UntrustedValueError(f"{what} is not valid JSON: {type(exc).__name__} "
                                  f"({size_of(raw)} bytes)") from None
    if "\\u" in text and _SURROGATE.search(text):
        try:
            _no_surrogates(value)
        except UntrustedValueError as exc:
            raise UntrustedValueError(f"{what}: {exc}") from None
    return value


def loads_object(raw: bytes | str, what: str = "value", **bounds: Any) -> dict[str, Any]:
    """``loads``, and the value must be a JSON object."""
    value = loads(raw, what, **bounds)
    if not isinstance(value, dict):
        raise UntrustedValueError(f"{what} is not a JSON object (got {type(value).__name__})")
    return value

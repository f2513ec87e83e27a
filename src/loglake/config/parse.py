"""The strict parser every setting goes through: the TOML file, the HTTP API and saved state alike.

:func:`build` turns one table of settings into a typed, frozen config object. Each value must have
its field's exact type (``true`` is not an int or a number, ``"5"`` is not a number; an int is a
float), unknown keys are refused naming the key and listing the valid ones, and the object's own
``__post_init__`` then checks ranges (:class:`SettingError`), so a config object that exists is a
valid one, however it was made. Errors name the full key (``streams.web.buffer_seconds``), what it
must be and what was given.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
import reprlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

from loglake.errors import ConfigError

T = TypeVar("T")

_SHOW = reprlib.Repr()
_SHOW.maxstring = 80
_SHOW.maxother = 80
_SHOW.maxlevel = 2


class SettingError(ConfigError):
    """A value out of its range, found by a config object's own checks.

    ``key`` is relative to the object's section, so that :func:`build` can name the full key of
    the table it parsed (``tail.nginx.start_at`` rather than the class's ``tail.NAME.start_at``).
    """

    def __init__(self, section: str, key: str, problem: str) -> None:
        super().__init__(f"{section}.{key}{problem}")
        self.key = key
        self.problem = problem

    def at(self, section: str) -> SettingError:
        """The same error, naming the key under ``section``."""
        return SettingError(section, self.key, self.problem)


def shown(value: Any) -> str:
    """``value`` as a message quotes it: a short repr and its kind, e.g. ``True (a boolean)``."""
    return f"{_SHOW.repr(value)} ({kind(value)})"


def kind(value: Any) -> str:
    """What a TOML or JSON value is, in the words of those formats."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return "null" if value is None else type(value).__name__


def value_of(key: str, hint: str, value: Any) -> Any:
    """``value`` of setting ``key`` checked against the field's type ``hint``, normalised.

    Lists become tuples, an integer given for a float becomes a float. Raises :class:`ConfigError`
    naming ``key``, the type it must have and what was given.
    """
    if hint == "bool":
        ok = isinstance(value, bool)
    elif hint == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
    elif hint == "str":
        ok = isinstance(value, str)
    elif hint == "tuple[str, ...]":
        ok = isinstance(value, list | tuple)
        if ok:
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise ConfigError(f"{key}[{i}] must be str, got {shown(item)}")
            value = tuple(value)
        hint = "a list of strings"
    elif hint == "Mapping[str, str]":
        ok = isinstance(value, Mapping)
        if ok:
            for name, item in value.items():
                if not isinstance(item, str):
                    raise ConfigError(
                        f"{key}.{str(name)[:100]} must be str, got {shown(item)}; quote it"
                    )
            value = dict(value)
        hint = "a table of strings"
    else:  # a field type this parser does not know: a mistake in loglake, not in the settings
        raise TypeError(f"no parser for settings of type {hint}")
    if not ok:
        raise ConfigError(f"{key} must be {hint}, got {shown(value)}")
    return value


def build(
    cls: type[T],
    section: str,
    raw: Any,
    *,
    keys: Collection[str] | None = None,
    hint: str = "",
) -> T:
    """Build the config dataclass ``cls`` from the table ``raw`` of settings of ``[section]``.

    ``keys`` limits the settings accepted (default: every field of ``cls``); ``hint`` is added to
    the message refusing another key. Raises :class:`ConfigError` naming the key for an unknown
    key, a wrong type or a value the object's own checks refuse.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}] must be a table of settings, got {shown(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    allowed = set(fields) if keys is None else set(keys)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in allowed:
            valid = ", ".join(sorted(allowed))
            raise ConfigError(
                f"unknown key {section}.{str(key)[:100]}; valid keys in [{section}]: {valid}{hint}"
            )
        kwargs[key] = value_of(f"{section}.{key}", str(fields[key].type), value)
    try:
        return cls(**kwargs)
    except SettingError as exc:
        raise exc.at(section) from None


def tables_of(section: str, raw: Any, example: str) -> Mapping[str, Any]:
    """``[section]`` as a table of named tables (``[streams.NAME]``...); ConfigError if not."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}] must be a table, got {shown(raw)}; e.g. {example}")
    for name, value in raw.items():
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"[{section}.{str(name)[:100]}] must be a table of settings, got {shown(value)}"
            )
    return raw


def read_saved(path: Path) -> dict[str, Any]:
    """The entries (NAME: settings) of a saved-state file of the server ({} when there is none).

    Each entry is then parsed like the config file's (``stream_config(name, settings, "state")``,
    ``continuous_query``). Raises :class:`ConfigError` when the file is not a JSON object.
    """
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix or remove it") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object of NAME: settings; fix or remove it")
    return raw


_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(text: str) -> int:
    """Bytes in a size such as ``512MB``, ``4GB`` or ``1.5GiB`` (DuckDB's units: KB = 1000 bytes).

    Raises ValueError for anything else.
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = (match.group(2).lower() or "b") if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size like 512MB or 4GB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_address(value: str, key: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[ipv6]:port`` (e.g. ``"[::1]:5514"``) into ``(host, port)``.

    ``key`` names the setting in messages. An empty host means every IPv4 interface (``0.0.0.0``).
    Raises :class:`ConfigError` when the port is missing or not in 0-65535, or an IPv6 address is
    written without brackets.
    """
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(
                f"{key} = {value!r}: write an IPv6 address as [ADDRESS]:PORT, e.g. [::1]:5514"
            )
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{key} = {value!r}: missing port; use HOST:PORT, e.g. 0.0.0.0:5514")
        if ":" in host:
            raise ConfigError(
                f"{key} = {value!r}: write an IPv6 address in brackets, e.g. [{host}]:{port}"
            )
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key} = {value!r}: the port must be a number from 0 to 65535")
    return host or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address; a name is not."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name may resolve to anything
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)

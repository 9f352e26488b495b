"""``--set KEY=VALUE``: the one parser of command-line overrides, for video configs and MT recipes
alike. ``KEY`` is a dotted path into the nested mapping (``optim.lr``, ``train.max-tokens``),
``VALUE`` is read as YAML (``0.1``, ``[26, 36]``, ``null``, ``true``)."""

from __future__ import annotations

from typing import Any

import yaml

from seqctx.errors import ConfigError

__all__ = ["apply_overrides", "parse_override"]


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` -> ``(["optim", "lr"], 0.1)``; :class:`ConfigError` if it is not ``key=value``."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    return key.split("."), yaml.safe_load(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Each ``KEY=VALUE`` set in ``data`` (in place; returned), creating sections on the way."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not a section")
        node[path[-1]] = value
    return data

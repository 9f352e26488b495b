"""YAML as configs and recipes are read: safe loading, and a key given twice in one mapping is an
error naming the key and both lines (PyYAML keeps the last one silently: ``epochs: 1`` then
``epochs: 3`` would train 3 epochs without a word)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from seqctx.errors import ConfigError

__all__ = ["load_yaml"]


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (merge keys ``<<`` aside)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first:
                raise _DuplicateKey(None, None, f"key {key!r} on line {line} is given twice (first on line "
                                    f"{first[key]}) in one mapping", key_node.start_mark)  # fmt: skip
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> Any:
    """The YAML file at ``path``, safely loaded; :class:`ConfigError` for a file that is not valid
    YAML or gives a key twice in one mapping."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e.problem}; remove one of them") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None

"""Loading ``configs/<name>.py:variant`` files and applying ``--config.a.b=value`` overrides.

The same convention as ml_collections' ``config_flags`` (and big_vision / Flax examples), without needing absl
flags, so every CLI sub-command can use it. Overrides are parsed into the type of the field they replace and an
unknown key is an error that lists the keys that do exist.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
from typing import Any, Sequence

import ml_collections

_PACKAGE_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_SOURCE_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
OVERRIDE_PREFIX = "--config."


def _installed_config_dir() -> str | None:
    for folder in (_PACKAGE_CONFIG_DIR, _SOURCE_CONFIG_DIR):
        if os.path.isdir(folder):
            return folder
    return None


def resolve_config_path(path: str) -> str:
    """A config file path as given, or the file of that name among the installed configs."""
    if os.path.isfile(path):
        return path
    folder = _installed_config_dir()
    if folder is not None:
        candidate = os.path.join(folder, os.path.basename(path))
        if os.path.isfile(candidate):
            return candidate
    available = sorted(f for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")) if folder else []
    raise FileNotFoundError(f"config file {path!r} not found; installed configs: {available}")


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """``spec`` is ``path/to/config.py`` or ``path/to/config.py:variant``; ``overrides`` are ``a.b=value``
    (or ``--config.a.b=value``) strings applied in order."""
    path, _, arg = spec.partition(":")
    path = resolve_config_path(path)
    name = "stableaudio_jax_config_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: a config file must define get_config(arg=None)")
    config = module.get_config(arg or None)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"{path}: get_config returned {type(config).__name__}; expected ml_collections.ConfigDict")
    return apply_overrides(config, overrides)


def split_override_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates ``--config.a.b=value`` / ``--config.a.b value`` arguments from the rest of ``argv``."""
    overrides, rest, i = [], [], 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(OVERRIDE_PREFIX):
            if "=" in arg:
                overrides.append(arg)
            elif i + 1 < len(argv):
                overrides.append(f"{arg}={argv[i + 1]}")
                i += 1
            else:
                raise ValueError(f"override {arg!r} has no value; expected {arg}=VALUE")
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def _parse_value(text: str, current: Any, key: str) -> Any:
    """Parses ``text`` into the type of ``current`` (the value being overridden); ``None`` unsets any field (a
    derived value, such as the conditioning widths, is then computed again)."""
    if text.strip() == "None":
        return None
    try:
        if isinstance(current, bool):
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError("expected true/false")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        if isinstance(current, (tuple, list)):
            value = ast.literal_eval(text) if text.strip()[:1] in "([" else [ast.literal_eval(v) for v in
                                                                           text.split(",") if v.strip()]
            return type(current)(value)
        return ast.literal_eval(text)  # None or another literal: take what the text says
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"override config.{key}={text!r}: cannot parse as {type(current).__name__} "
                         f"(current value {current!r}): {e}") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``a.b=value`` overrides in place (and returns the config)."""
    for item in overrides:
        text = item[len(OVERRIDE_PREFIX):] if item.startswith(OVERRIDE_PREFIX) else item
        key, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form --config.key=value")
        *parents, leaf = key.split(".")
        node = config
        for depth, part in enumerate(parents):
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                where = ".".join(parents[:depth]) or "<root>"
                raise KeyError(f"override {item!r}: config.{'.'.join(parents[:depth + 1])} is not a section; "
                               f"keys of {where}: {sorted(node.keys())}")
            node = node[part]
        if leaf not in node:
            raise KeyError(f"override {item!r}: unknown key config.{key}; keys here: {sorted(node.keys())}")
        node[leaf] = _parse_value(value, node[leaf], key)
    return config

"""The params reference, written from the typed params models (``visionflow.config``) and their field comments.

Each key of params.yaml is described once, by the comment on its field in config.py (or the comment lines just
above it); the documentation's configuration page is generated from them (the MkDocs hook ``docs/hooks.py``), so
it cannot drift from the code. The default shown is the shipped params.yaml's value where it sets the key, else the
model's.
"""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from visionflow.config import Config

__all__ = ["Key", "keys", "markdown"]

_UNSET = object()
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


@dataclass(frozen=True)
class Key:
    """One key of params.yaml: its dotted name, default, allowed values and meaning."""

    name: str
    default: str
    allowed: str
    meaning: str


Section = tuple[str, type[BaseModel], list[Key]]


def keys(shipped: dict[str, Any] | None = None, model: type[BaseModel] = Config, prefix: str = "") -> list[Section]:
    """Every section (``data``, ``data.builtin``, ...) with its model and keys, in params.yaml's order; a field
    whose value is a section of its own is listed as a key and again as a section. ``shipped``: params.yaml's
    contents, whose values are the defaults shown."""
    comments = _comments(model)
    rows: list[Key] = []
    nested: list[Section] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        dotted = f"{prefix}{key}"
        allowed = _allowed(field.annotation) + _bounds(field.metadata)
        rows.append(Key(dotted, _default(field, shipped or {}, dotted), allowed, comments.get(name, "")))
        for member, form in _sections(field.annotation):
            nested.extend(keys(shipped, member, f"{dotted}{form}."))
    return [(prefix.removesuffix("."), model, rows), *nested] if prefix else nested


def markdown(shipped: dict[str, Any] | None = None) -> str:
    """The reference as Markdown: a heading, the section's description and a table of its keys per section."""
    parts = []
    for section, model, rows in keys(shipped):
        parts.append(f"## `{section}`\n")
        doc = inspect.getdoc(model) or ""
        if model.__doc__ and not doc.startswith(model.__name__):  # pydantic gives every model a docstring
            parts.append(textwrap.fill(" ".join(doc.split()), 118) + "\n")
        parts.append("| key | default | allowed | meaning |\n|---|---|---|---|")
        parts.extend(
            f"| `{row.name}` | {_cell(row.default)} | {_escape(row.allowed)} | {_escape(row.meaning)} |" for row in rows
        )
        parts.append("")
    return "\n".join(parts)


def _cell(text: str) -> str:
    return f"`{text}`" if text else ""


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _default(field: FieldInfo, shipped: dict[str, Any], dotted: str) -> str:
    node: Any = shipped
    for part in dotted.split("."):
        node = node.get(part, _UNSET) if isinstance(node, dict) else _UNSET
    if node is _UNSET and field.is_required():
        return ""
    value = field.get_default(call_default_factory=True) if node is _UNSET else node
    if isinstance(value, BaseModel | dict) and dotted.count(".") and _sections(field.annotation):
        return ""  # a section: its keys are listed below
    if isinstance(value, float):
        value = float(f"{value:.4g}")
    if isinstance(value, tuple):
        value = list(value)
    if hasattr(value, "__fspath__"):
        value = str(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _allowed(annotation: Any) -> str:
    """A type as a reader would say it: ``resize | pad``, ``number >= 0``, ``[int, int] or null``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_allowed(a) for a in args))
    if origin is typing.Annotated:
        return _allowed(args[0]) + _bounds(args[1:])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section (below)"
    if origin in (list, tuple):
        inner = ", ".join(_allowed(a) for a in args if a is not Ellipsis)
        return f"[{inner}]" if origin is tuple else f"list of {inner}"
    if origin is dict:
        return f"mapping {_allowed(args[0])} -> {_allowed(args[1])}"
    text = {type(None): "null", bool: "true / false", float: "number", str: "text", int: "int"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )
    if text == "Path":
        text = "path"
    return text


def _bounds(metadata: Any) -> str:
    flat = [m for item in metadata for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
    found = [f"{_BOUNDS[name]} {getattr(m, name)}" for m in flat for name in _BOUNDS if hasattr(m, name)]
    return f" ({', '.join(found)})" if found else ""


def _sections(annotation: Any) -> list[tuple[type[BaseModel], str]]:
    """The section models a field holds, with how its keys are reached: ``.`` directly, ``.<split>.`` through a
    mapping of names."""
    found: list[tuple[type[BaseModel], str]] = []
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    if typing.get_origin(annotation) is dict:
        return [(model, ".<name>") for model, _ in _sections(args[1])]
    for arg in args:
        for model, form in _sections(arg):
            if all(model is not seen for seen, _ in found):
                found.append((model, form))
    return found


@cache
def _comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> its comment in the model's source: the comment on its lines, else the comment lines just
    above it."""
    source = textwrap.dedent(inspect.getsource(model))
    lines: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            lines[token.start[0]] = token.string.lstrip("#").strip()
    code = source.splitlines()
    out: dict[str, str] = {}
    for node in typing.cast(ast.ClassDef, ast.parse(source).body[0]).body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        end = node.end_lineno or node.lineno
        text = [lines[n] for n in range(node.lineno, end + 1) if n in lines]
        above = node.lineno - 1
        while not text and above in lines and code[above - 1].lstrip().startswith("#"):
            above -= 1
        if not text:
            text = [lines[n] for n in range(above + 1, node.lineno)]
        out[node.target.id] = " ".join(text)
    return out

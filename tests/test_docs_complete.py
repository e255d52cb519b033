"""The reference docs cover everything the gateway accepts and serves.

(a) Every config key (the pydantic models under ``GatewayConfig``, walked recursively) has a
    row in docs/configuration.md's table, by its dotted path: ``projects[].keys[].scopes``
    for lists of models, and ``providers.<name>.timeout.read`` may stand for the same key
    under every provider. And every path the table documents is a real key, so a renamed
    or removed key cannot linger in the doc.
(b) Every route the app serves (method + path, walked recursively into Starlette ``Mount``s)
    has a row in docs/api.md, and every row there is served. Path parameters match by
    position, whatever their names (``{memory_id}`` = ``{id}``, ``{key:path}`` = ``{key}``).
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from starlette.routing import Mount, Route

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config

DOCS = Path(__file__).resolve().parents[1] / "docs"
PLACEHOLDER = "<name>"  # a documented segment that stands for any one key name


# -- (a) configuration ---------------------------------------------------------------------


def _models_in(annotation: typing.Any) -> tuple[list[type[BaseModel]], bool]:
    """The pydantic models an annotation holds (Optional and unions unwrapped), and whether in a list."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        found, in_list = [], False
        for arg in typing.get_args(annotation):
            models, listed = _models_in(arg)
            found += models
            in_list = in_list or listed
        return found, in_list
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (list, tuple, set, frozenset):
        models, _ = _models_in(typing.get_args(annotation)[0])
        return models, True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], False
    return [], False


def config_keys(model: type[BaseModel] = GatewayConfig, prefix: str = "") -> set[str]:
    """Every leaf key's dotted path; a field holding a model contributes its own leaves instead."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        models, in_list = _models_in(field.annotation)
        if not models:
            keys.add(path)
        for nested in models:
            keys |= config_keys(nested, f"{path}{'[]' if in_list else ''}.")
    return keys


def documented_settings() -> set[str]:
    """The first cell of each row of configuration.md's settings table, without its backticks."""
    rows = re.findall(r"^\|\s*`([^`]+)`\s*\|", (DOCS / "configuration.md").read_text(), flags=re.MULTILINE)
    return set(rows)


def _covers(documented: str, key: str) -> bool:
    doc_parts, key_parts = documented.split("."), key.split(".")
    return len(doc_parts) == len(key_parts) and all(
        d == k or d == PLACEHOLDER for d, k in zip(doc_parts, key_parts))


def test_config_keys_are_found_by_the_walk():
    # Guards the walk itself: nested models, lists of models and optional models are all entered.
    keys = config_keys()
    assert {"server.port", "projects[].keys[].scopes", "memory.vectors.qdrant.url",
            "providers.gemini.timeout.read", "learning.extractor.provider"} <= keys


def test_every_config_key_is_documented():
    documented = documented_settings()
    missing = sorted(key for key in config_keys() if not any(_covers(doc, key) for doc in documented))
    assert not missing, f"config keys with no row in docs/configuration.md: {missing}"


def test_every_documented_setting_is_a_config_key():
    keys = config_keys()
    stale = sorted(doc for doc in documented_settings() if not any(_covers(doc, key) for key in keys))
    assert not stale, f"docs/configuration.md documents settings the gateway does not accept: {stale}"


# -- (b) routes ------------------------------------------------------------------------------


def _normalise(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def served_routes(routes: typing.Iterable[typing.Any], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, entering Mounts and route groups; HEAD is left out (Starlette adds it
    to GET)."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            assert route.routes, f"Mount {prefix}{route.path} holds no routes this test can walk"
            found |= served_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    found.add((method, _normalise(prefix + route.path)))
        elif isinstance(getattr(route, "routes", None), list):
            # A grouping with no path of its own (gateway.routing.PathOwner): its routes' paths are
            # relative to the same enclosing Mount.
            found |= served_routes(route.routes, prefix)
        else:
            raise AssertionError(f"unexpected route type {type(route).__name__} at {prefix}: teach this test about it")
    return found


def documented_routes() -> set[tuple[str, str]]:
    rows = re.findall(r"^\|\s*(GET|POST|PUT|PATCH|DELETE)\s*\|\s*`([^`]+)`", (DOCS / "api.md").read_text(),
                      flags=re.MULTILINE)
    return {(method, _normalise(path)) for method, path in rows}


def test_the_route_list_matches_the_app(tmp_path):
    config = parse_config({
        "projects": [{"id": "docs", "keys": [{"key": "mnx_docs_key"}]}],
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "gateway.db")}},
        "memory": {"vectors": {"edge": {"path": str(tmp_path / "memories")}}},
    })
    served = served_routes(create_app(config).routes)
    assert ("GET", "/health") in served and ("POST", "/v1/chat/completions") in served  # the walk works
    documented = documented_routes()
    assert not served - documented, f"routes missing from docs/api.md: {sorted(served - documented)}"
    assert not documented - served, f"docs/api.md lists routes the app does not serve: {sorted(documented - served)}"

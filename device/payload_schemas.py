"""JSON Schemas of the MQTT payloads (``alanet/device/schemas/*.schema.json``), ready to validate.

The schemas refer to each other by relative ``$ref`` (``state.schema.json#/$defs/exercise``);
:func:`validator` resolves those within the package, with no network access.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    """The schema ``<name>.schema.json`` (alert, state, status, session, history, command, ...)."""
    return json.loads(resources.files("alanet.device").joinpath("schemas", f"{name}.schema.json").read_text())


@lru_cache(maxsize=None)
def validator(name: str) -> Any:
    """A ``jsonschema`` Draft 2020-12 validator for ``<name>.schema.json`` with the sibling schemas registered."""
    import jsonschema
    from referencing import Registry, Resource

    names = [p.name.removesuffix(".schema.json")
             for p in resources.files("alanet.device").joinpath("schemas").iterdir() if p.name.endswith(".schema.json")]
    registry = Registry().with_resources(
        (schema(n)["$id"], Resource.from_contents(schema(n))) for n in names if "$id" in schema(n))
    return jsonschema.Draft202012Validator(schema(name), registry=registry)

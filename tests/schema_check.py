"""Every manifest edgeformer writes during the tests is validated against the published JSON
Schema (edgeformer/runtime/manifest.schema.json): conftest.py registers ``check`` with the one
writer (``runtime.manifest.WRITE_CHECKS``); a write that breaks the schema fails its test."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema

SCHEMA = json.loads(resources.files("edgeformer.runtime").joinpath("manifest.schema.json").read_text("utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
CHECKED = {"manifests": 0}


def check(text: str) -> None:
    """Validate one manifest.json text; raises jsonschema.ValidationError naming the path."""
    VALIDATOR.validate(json.loads(text))
    CHECKED["manifests"] += 1

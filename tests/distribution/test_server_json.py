"""server.json stays listable: valid against the registry schema 2025-12-11, in step with
pyproject.toml, the README and the settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from kling_omni_mcp.bundle import ROOT, project_version
from kling_omni_mcp.config import Settings

SERVER: dict[str, Any] = json.loads((ROOT / "server.json").read_text())
SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
README = (ROOT / "README.md").read_text()


def test_valid_against_the_registry_schema() -> None:
    assert SERVER["$schema"] == SCHEMA_URL
    schema = json.loads((Path(__file__).parents[1] / "data" / "server.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(SERVER)


def test_description_version_and_name() -> None:
    assert len(SERVER["description"]) <= 100
    version = project_version()
    assert SERVER["version"] == version
    [package] = SERVER["packages"]
    assert package["version"] == version and package["identifier"] == "kling-omni-mcp"
    assert f"mcp-name: {SERVER['name']} " in README  # the line the registry looks for


def _readme_settings() -> set[str]:
    """Every KLING_* variable named in the first column of the README's configuration table."""
    return set(re.findall(r"^\|\s*`(KLING_[A-Z0-9_]+)`", README, re.M))


def test_environment_variables_match_the_readme_and_the_settings() -> None:
    listed = {v["name"] for v in SERVER["packages"][0]["environmentVariables"]}
    documented = _readme_settings()
    assert listed == documented, listed ^ documented
    settings = {f"KLING_{name.upper()}" for name in Settings.model_fields}
    assert listed <= settings, listed - settings
    assert {"KLING_MAX_UNITS_PER_DAY", "KLING_CONFIRM_ABOVE_UNITS"} <= listed


def test_every_credential_is_secret() -> None:
    secret_fields = {
        f"KLING_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }
    for var in SERVER["packages"][0]["environmentVariables"]:
        if var["name"] in secret_fields:
            assert var.get("isSecret") is True, var["name"]
    assert secret_fields <= {v["name"] for v in SERVER["packages"][0]["environmentVariables"]}

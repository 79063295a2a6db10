"""The registry manifest, the README and the settings tell the same story."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema

from kling_omni_mcp import __version__
from kling_omni_mcp.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def load_manifest() -> dict:  # type: ignore[type-arg]
    return json.loads((ROOT / "server.json").read_text())


def test_server_json_is_valid_against_the_registry_schema() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "server.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(load_manifest())


def test_versions_agree() -> None:
    manifest = load_manifest()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert manifest["version"] == project["version"] == __version__
    assert manifest["packages"][0]["version"] == __version__
    assert manifest["packages"][0]["identifier"] == project["name"]


def test_every_setting_is_described_and_secrets_are_marked() -> None:
    env = {v["name"]: v for v in load_manifest()["packages"][0]["environmentVariables"]}
    settings = {f"KLING_{name.upper()}" for name in Settings.model_fields}
    assert set(env) == settings
    for name, var in env.items():
        assert var.get("description"), name
    secrets = {n for n, v in env.items() if v.get("isSecret")}
    assert secrets == {
        "KLING_API_KEY",
        "KLING_ACCESS_KEY",
        "KLING_SECRET_KEY",
        "KLING_MCP_AUTH_TOKENS",
        "KLING_WEBHOOK_SECRET",
        "KLING_MCP_OAUTH_CLIENT_SECRET",
        "KLING_LINK_SECRET",
        "KLING_REDIS_URL",  # may carry a password
    }


def test_readme_names_the_server_and_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"mcp-name: {load_manifest()['name']}" in readme
    for name in Settings.model_fields:
        assert f"KLING_{name.upper()}" in readme, name
    # The two commands a newcomer needs.
    assert re.search(r"kling-omni-mcp demo", readme)
    assert re.search(r"python -m pytest", readme)

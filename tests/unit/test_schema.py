"""The JSON Schema of routes.yaml: generated from the validator's own table, and true of the example files."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT

from splitter import config

EXAMPLES = [ROOT / "routes.yaml", ROOT / "deploy/splitter/routes.yaml"]


def test_the_committed_schema_is_the_generated_one():
    committed = json.loads((ROOT / "routes.schema.json").read_text())
    assert committed == config.json_schema(), "regenerate: splitter schema > routes.schema.json"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_file_passes_both_the_schema_and_the_validator(path: Path):
    jsonschema.Draft202012Validator(config.json_schema()).validate(yaml.safe_load(path.read_text()))
    config.load(str(path), "production")
    assert path.read_text().startswith("# yaml-language-server: $schema="), "editors find the schema"


@pytest.mark.parametrize(
    "mistake",
    [
        lambda d: d["routes"][0].update(percent=150),
        lambda d: d["routes"][0].update(colour="red"),
        lambda d: d["backends"]["legacy"].update(read_timout=3),
        lambda d: d.update(anonymous="maybe"),
        lambda d: d["routes"][0].update(guard={"max_error_rate": 2}),
        lambda d: d["routes"][0].update(name="Auth-Route"),
        lambda d: d.pop("backends"),
    ],
)
def test_mistakes_are_caught_by_the_schema_and_the_validator(mistake, tmp_path):
    doc = yaml.safe_load((ROOT / "routes.yaml").read_text())
    mistake(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(config.json_schema()).validate(doc)
    bad = tmp_path / "routes.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(config.ConfigError):
        config.load(str(bad), "development")

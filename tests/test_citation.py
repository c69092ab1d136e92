"""The licence and the citation file at the top level (what a researcher copies first)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[1]
# The Citation File Format 1.2.0 schema (https://citation-file-format.github.io/1.2.0/schema.json,
# CC-BY-4.0), as shipped in cffconvert 2.0.0; cffconvert itself needs jsonschema < 4, which the
# pipeline cannot use, so its schema check is done here with the jsonschema we have.
CFF_SCHEMA = REPO / "tests" / "data" / "citation-file-format-1.2.0.schema.json"


def citation() -> dict:
    # CFF is YAML; dates are compared as strings by the schema, so load them as such.
    text = (REPO / "CITATION.cff").read_text(encoding="utf-8")
    return json.loads(json.dumps(yaml.safe_load(text), default=str))


def test_citation_file_is_valid_cff_1_2_0() -> None:
    schema = json.loads(CFF_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
        citation()
    )


def test_schema_check_rejects_a_broken_citation() -> None:
    schema = json.loads(CFF_SCHEMA.read_text())
    broken = citation()
    del broken["authors"]
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    assert any("authors" in e.message for e in errors)


def test_citation_references_the_paper_and_the_works_whose_code_it_follows() -> None:
    titles = [ref["title"] for ref in citation()["references"]]
    for needle in (
        "A Method to Model Conditional Distributions with Normalizing Flows",
        "Analyzing Inverse Problems with Invertible Neural Networks",
        "Guided Image Generation with Conditional Invertible Neural Networks",
        "Generative Latent Flow",
    ):
        assert any(needle in t for t in titles), needle


def test_licence_is_mit_and_named_alike_everywhere() -> None:
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert citation()["license"] == "MIT"
    assert "MIT" in (REPO / "README.md").read_text()

"""The VoiceFinetune CRD: one schema (the chart's file, copied at the top level), its validation and defaults,
and the example resources checked against it."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from voicefinetune_operator.crd import read_spec

from tests.helpers.k8s_harness import CRD, REPO
from voicefinetune.lifecycle import SPEC_FIELDS
from voicefinetune.schemas import FinetuneRequest

TOP_LEVEL_COPY = REPO / "crds" / "voicefinetune.io_voicefinetunes.yaml"
EXAMPLES = sorted((REPO / "crds" / "examples").glob("*.yaml"))


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD.read_text())


def version_schema() -> dict[str, Any]:
    (version,) = load_crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server does before validating: fill in ``default`` for absent properties."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    result = dict(value)
    for name, sub in (schema.get("properties") or {}).items():
        if name not in result and "default" in sub:
            result[name] = copy.deepcopy(sub["default"])
        if name in result:
            result[name] = apply_defaults(sub, result[name])
    return result


# OpenAPI v3.0 schemas are close to draft 4; testers may pick any draft (plain jsonschema.validate is 2020-12)
VALIDATORS = (jsonschema.Draft4Validator, jsonschema.Draft7Validator, jsonschema.Draft202012Validator)


def validate(resource: dict[str, Any]) -> dict[str, Any]:
    """Default then validate like the API server, with every JSON Schema draft a tester might use."""
    schema = version_schema()
    defaulted = apply_defaults(schema, resource)
    for validator in VALIDATORS:
        validator.check_schema(schema)
        validator(schema).validate(defaulted)
    return defaulted


def test_plain_jsonschema_validate_without_defaults():
    """What a tester writes first: no defaulting, the default draft; required fields are really required."""
    schema = version_schema()
    base = {"apiVersion": "voicefinetune.io/v1alpha1", "kind": "VoiceFinetune", "metadata": {"name": "x"}}
    jsonschema.validate(
        {**base, "spec": {"datasetS3Key": "d.zip", "speakerName": "Hero1", "lr": 1e-6}}, schema
    )
    for spec in (
        {"speakerName": "Hero1"},
        {"datasetS3Key": "d.zip"},
        {"datasetS3Key": "d.zip", "speakerName": "Hero_1"},
        {"datasetS3Key": "d.zip", "speakerName": "Hero1", "lr": 0},
        {"datasetS3Key": "d.zip", "speakerName": "Hero1", "lr": 0.0},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**base, "spec": spec}, schema)


def readme_example() -> dict[str, Any]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Kubernetes") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "the README's Kubernetes section has a yaml example"
    return yaml.safe_load(block.group(1))


def test_top_level_copy_is_identical_to_the_charts_crd():
    assert TOP_LEVEL_COPY.read_bytes() == CRD.read_bytes(), (
        "crds/ must hold the chart's CRD unchanged: cp charts/voicefinetune/crds/*.yaml crds/"
    )


def test_contract_names_scope_status_and_printer_columns():
    crd = load_crd()
    assert crd["metadata"]["name"] == "voicefinetunes.voicefinetune.io"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("voicefinetune.io", "Namespaced")
    assert spec["names"]["kind"] == "VoiceFinetune" and spec["names"]["plural"] == "voicefinetunes"
    assert spec["names"]["shortNames"] == ["vft"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Speaker": ".spec.speakerName",
        "Epoch": ".status.progress.epoch",
        "Loss": ".status.progress.loss",
        "Age": ".metadata.creationTimestamp",
    }
    phases = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]["enum"]
    assert phases == ["Queued", "Preparing", "Training", "Loading", "Ready", "Failed"]


def test_spec_defaults_are_the_api_defaults():
    spec_schema = version_schema()["properties"]["spec"]["properties"]
    for camel, snake in SPEC_FIELDS.items():
        api_default = FinetuneRequest.model_fields[snake].default
        if api_default is not None and snake != "dataset_s3_key":
            assert spec_schema[camel]["default"] == api_default, camel
    defaulted = validate(
        {
            "apiVersion": "voicefinetune.io/v1alpha1",
            "kind": "VoiceFinetune",
            "metadata": {"name": "x"},
            "spec": {"datasetS3Key": "d.zip"},
        }
    )
    assert defaulted["spec"] == {
        "datasetS3Key": "d.zip",
        "speakerName": "speaker_custom",
        "numEpochs": 15,
        "batchSize": 2,
        "lr": 1e-6,
        "gradientAccumulationSteps": 1,
        "language": "English",
        "method": "full",
        "loraRank": 16,
        "deletionPolicy": "Retain",
    }


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({}, "'datasetS3Key' is a required property"),
        ({"datasetS3Key": "d.zip", "speakerName": "Hero_1"}, "does not match"),
        ({"datasetS3Key": "d.zip", "speakerName": "my_voice_2b"}, "does not match"),
        ({"datasetS3Key": "d.zip", "speakerName": "1hero"}, "does not match"),
        ({"datasetS3Key": "d.zip", "numEpochs": 0}, "less than the minimum"),
        ({"datasetS3Key": "d.zip", "batchSize": 0}, "less than the minimum"),
        ({"datasetS3Key": "d.zip", "lr": 0}, "should not be valid under"),
        ({"datasetS3Key": "d.zip", "lr": 0.0}, "should not be valid under"),
        ({"datasetS3Key": "d.zip", "lr": -1e-6}, "should not be valid under"),
        ({"datasetS3Key": "d.zip", "lr": 2}, "greater than the maximum"),
        ({"datasetS3Key": "d.zip", "numEpochs": 1.5}, "is not of type 'integer'"),
        ({"datasetS3Key": "d.zip", "deletionPolicy": "Purge"}, "is not one of"),
        ({"datasetS3Key": ""}, "non-empty"),
        ({"datasetS3Key": "d.zip", "method": "dora"}, "'dora' is not one of \\['full', 'lora'\\]"),
        ({"datasetS3Key": "d.zip", "loraTargets": ["lm_head"]}, "'lm_head' is not one of"),
    ],
)
def test_schema_refuses_bad_specs(spec, problem):
    with pytest.raises(jsonschema.ValidationError, match=problem):
        validate(
            {
                "apiVersion": "voicefinetune.io/v1alpha1",
                "kind": "VoiceFinetune",
                "metadata": {"name": "x"},
                "spec": spec,
            }
        )


@pytest.mark.parametrize(
    "name", ["Hero1", "hero_voice", "speaker_custom", "a", "Narrator-Deep", "x__y", "end_"]
)
def test_schema_accepts_speaker_names_the_api_accepts(name):
    validate(
        {
            "apiVersion": "voicefinetune.io/v1alpha1",
            "kind": "VoiceFinetune",
            "metadata": {"name": "x"},
            "spec": {"datasetS3Key": "d.zip", "speakerName": name},
        }
    )
    FinetuneRequest(dataset_s3_key="d.zip", speaker_name=name)  # same rule on both sides


def test_no_lookahead_in_patterns():
    """The API server compiles patterns with Go's RE2: no lookaround."""
    for pattern in re.findall(r"pattern: '([^']*)'", CRD.read_text()):
        assert "(?=" not in pattern and "(?!" not in pattern and "(?<" not in pattern


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_resources_are_valid(path: Path):
    for resource in yaml.safe_load_all(path.read_text()):
        validate(resource)
        read_spec(apply_defaults(version_schema(), resource))  # the operator reads it the same way


def test_examples_exist_and_readme_example_is_valid():
    assert EXAMPLES, "crds/examples/ holds example resources"
    example = readme_example()
    validate(example)
    assert example["kind"] == "VoiceFinetune"


def test_more_than_one_gpu_is_refused_with_a_message_by_the_schema():
    with pytest.raises(jsonschema.ValidationError, match="greater than the maximum"):
        validate(
            {
                "apiVersion": "voicefinetune.io/v1alpha1",
                "kind": "VoiceFinetune",
                "metadata": {"name": "x"},
                "spec": {"datasetS3Key": "d.zip", "gpus": 2},
            }
        )
    gpus = version_schema()["properties"]["spec"]["properties"]["gpus"]
    (rule,) = gpus["x-kubernetes-validations"]
    assert rule["rule"] == "self <= 1" and "spec.gpus > 1 is not supported" in rule["message"]


def test_spec_is_immutable_once_created():
    (rule,) = version_schema()["properties"]["spec"]["x-kubernetes-validations"]
    assert rule["rule"] == "self == oldSelf" and "spec is immutable" in rule["message"]

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.validation import validate_schema


@pytest.fixture(scope="module")
def served_schema() -> dict:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


def test_the_generator_validates_the_schema_without_warnings(tmp_path):
    # Warnings are remembered per process; start clean so only this generation counts.
    GENERATOR_STATS.reset()
    out = tmp_path / "schema.json"

    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out))

    assert "/api/approvals/" in json.loads(out.read_text())["paths"]


def test_the_served_schema_is_valid_openapi(served_schema):
    validate_schema(served_schema)


def test_the_schema_documents_the_approvals_endpoints(served_schema):
    paths = served_schema["paths"]
    listing = paths["/api/approvals/"]["get"]
    detail = paths["/api/approvals/{id}/"]["get"]
    decision = paths["/api/approvals/{id}/decision/"]["post"]

    assert {p["name"] for p in listing["parameters"]} >= {"status", "page", "page_size"}
    assert set(listing["responses"]) == {"200", "400", "403"}
    assert set(detail["responses"]) == {"200", "403", "404"}
    assert set(decision["responses"]) == {"200", "400", "403", "404", "409", "415"}

    def schema_of(operation: dict, status: str) -> dict:
        ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        return served_schema["components"]["schemas"][ref.rsplit("/", 1)[1]]

    request_ref = decision["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = served_schema["components"]["schemas"][request_ref.rsplit("/", 1)[1]]
    # Neither is required alone: one of action / approved is (checked by the view, 400 naming action).
    assert "required" not in request
    assert request["properties"]["approved"]["type"] == "boolean"
    action_ref = request["properties"]["action"]["allOf"][0]["$ref"]
    action = served_schema["components"]["schemas"][action_ref.rsplit("/", 1)[1]]
    assert set(action["enum"]) == {"approve", "reject", "respond", "terminate"}
    assert set(request["properties"]) == {"action", "approved", "reason", "response", "args", "grant"}

    assert "events" in schema_of(detail, "200")["properties"]
    assert "events" in schema_of(decision, "200")["properties"]
    assert set(schema_of(decision, "400")["properties"]) >= {"action", "approved", "reason", "response", "args"}
    assert set(schema_of(decision, "409")["properties"]) >= {"detail", "code", "status", "decided_by", "decided_at"}
    assert schema_of(decision, "403")["required"] == ["detail"]


def test_the_schema_documents_the_grants_endpoints(served_schema):
    paths = served_schema["paths"]
    assert {p["name"] for p in paths["/api/grants/"]["get"]["parameters"]} >= {"active", "tool", "customer", "q"}
    assert set(paths["/api/grants/{id}/"]) >= {"get", "delete"}
    assert set(paths["/api/grants/{id}/"]["delete"]["responses"]) == {"204", "403", "404"}
    decision = paths["/api/approvals/{id}/decision/"]["post"]
    ref = decision["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    grant = served_schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]["grant"]
    assert "GrantTerms" in str(grant)

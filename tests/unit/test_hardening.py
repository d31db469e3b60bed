"""Hardening (issue 23): inputs that used to 500, reads closed to DNS rebinding, the token
checked before the body, response headers, CSV cells, rate limits and stated limits."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

DEEP_YAML = "texts: " + "[" * 50_000 + "]" * 50_000
ALIASES_YAML = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: [" + ", ".join(["*a"] * 100) + "]\n"


@pytest.mark.parametrize("text", [DEEP_YAML, ALIASES_YAML, "when: 2001-13-45\n"],
                         ids=["deep", "aliases", "bad-timestamp"])
def test_yaml_import_refuses_a_hostile_document_with_a_422_naming_it(
        client: TestClient, text: str) -> None:
    api = client.post("/api/v1/jobs/import-yaml", content=text.encode(),
                      headers={"Content-Type": "application/yaml"})
    assert api.status_code == 422, api.text
    assert api.json()["error"]["field"] == "yaml"
    assert "YAML" in api.json()["error"]["message"]
    page = client.post("/jobs/import", data={"yaml_text": text})
    assert page.status_code == 422, page.text[:300]
    assert "YAML" in page.text

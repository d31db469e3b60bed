"""The page script (static/js/, ES modules): served as JavaScript, every import and every
data-action in the templates has its file and its handler."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "static" / "js"


@pytest.mark.parametrize("name", sorted(p.name for p in JS.glob("*.js")))
def test_static_modules_are_served_as_javascript(client: TestClient, name: str) -> None:
    """A module script with another type is refused (the app says nosniff)."""
    r = client.get(f"/static/js/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == "text/javascript"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_base_page_loads_the_entry_module(client: TestClient) -> None:
    page = client.get("/").text
    assert '<script type="module" src="/static/js/main.js"></script>' in page
    assert "circuitlab.js" not in page


def test_every_static_import_names_a_module_that_exists() -> None:
    imports = {(p.name, m) for p in JS.glob("*.js")
               for m in re.findall(r'^import (?:.* from )?"(\./[^"]+)";', p.read_text(), re.M)}
    assert imports
    assert [f"{src}: {m}" for src, m in sorted(imports) if not (JS / m).is_file()] == []


def test_every_data_action_in_the_templates_has_a_handler_and_back() -> None:
    used = {m for p in (ROOT / "templates").glob("*.html")
            for m in re.findall(r'data-action="([a-z-]+)"', p.read_text())}
    handled = {m for p in JS.glob("*.js")
               for m in re.findall(r'^action\("([a-z-]+)"', p.read_text(), re.M)}
    assert used == handled

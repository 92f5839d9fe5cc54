"""`GET /` tells whoever opens Beacon's URL where to go: the API docs and the README."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_a_browser_gets_a_page_linking_to_the_api_docs(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"Accept": BROWSER_ACCEPT})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    links = re.findall(r"href='([^']+)'", response.text)
    assert "/docs" in links
    assert "README.md" in response.text
    docs = await client.get(links[links.index("/docs")])
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_other_clients_get_json_naming_the_docs_and_readme(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    about = response.json()
    assert about["docs"] == "/docs"
    assert about["readme"]["file"] == "README.md"
    assert "Sending events" in about["readme"]["sections"]
    assert about["endpoints"]["tracardi"] == "POST /track"
    assert (await client.get(about["openapi"])).status_code == 200
    assert "Accept" in {v.strip() for v in response.headers["vary"].split(",")}


async def test_readme_has_every_section_the_home_page_names(client: httpx.AsyncClient) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    titles = set(re.findall(r"^#+ (.+)$", readme, flags=re.MULTILINE))

    sections = (await client.get("/")).json()["readme"]["sections"]

    assert set(sections) <= titles

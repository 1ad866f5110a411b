"""The console's files as served (no browser needed): the page, its modules, their headers,
and the rules its code keeps (no HTML built from data, no eval, nothing from elsewhere)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mainspring.server import create_app
from mainspring.server.config import ServerConfig
from mainspring.server.console import STATIC
from mainspring.server.security import CONSOLE_CSP

pytestmark = pytest.mark.anyio

SCRIPTS = sorted(STATIC.rglob("*.js"))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(f"sqlite:///{tmp_path / 'c.db'}", config=ServerConfig(auth=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as c:
        yield c


async def test_the_page_and_its_modules_are_served_with_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert csp == CONSOLE_CSP  # the server's one policy, on the console too
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # Every file the page names is there; modules are JavaScript whatever the host's
    # mimetypes table says (browsers refuse modules of any other type).
    for ref in re.findall(r'(?:src|href)="(/console/[^"]+)"', page.text):
        answer = await client.get(ref)
        assert answer.status_code == 200, ref
        if ref.endswith(".js"):
            assert answer.headers["content-type"].startswith("text/javascript")
    for script in SCRIPTS:
        rel = script.relative_to(STATIC).as_posix()
        answer = await client.get(f"/console/{rel}")
        assert answer.status_code == 200, rel
        assert answer.headers["content-type"].startswith("text/javascript"), rel
        assert answer.headers["content-security-policy"] == CONSOLE_CSP
        assert answer.headers["cache-control"] == "no-cache"
    assert (await client.get("/console/nope.js")).status_code == 404


def test_the_page_has_no_inline_script_or_style() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(STATIC).as_posix())
def test_scripts_never_build_html_from_data_nor_eval(script: Path) -> None:
    code = script.read_text()
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert forbidden not in code, f"{script.name} uses {forbidden}: use textContent (dom.h)"
    assert "new Function" not in code
    assert "http://" not in code.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in code  # nothing from elsewhere: the CSP would refuse it anyway
    # Modules import only modules of the console, by relative path.
    for target in re.findall(r'from "([^"]+)"', code):
        assert target.startswith("."), f"{script.name} imports {target}"
        assert (script.parent / target).resolve().is_file(), f"{script.name}: {target}"

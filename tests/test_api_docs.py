"""/docs and /redoc work without internet: every asset they load is served by fastpost."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from fastpost.api_docs import ASSET_FILES, ASSETS_DIR
from tests.helpers import environment, fastpost, headless_chromium, serve_fastpost

_URL_ATTRIBUTE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
_URL_IN_SCRIPT = re.compile(r"""(?:url|spec-url)\s*[:=]\s*['"]([^'"]+)['"]""")


def _urls_in(html: str) -> list[str]:
    return _URL_ATTRIBUTE.findall(html) + _URL_IN_SCRIPT.findall(html)


def test_the_packaged_assets_are_where_fastpost_reads_them() -> None:
    # fastapi-offline's static folder is its data, not its API: a move must fail here.
    for name in ASSET_FILES:
        assert (ASSETS_DIR / name).stat().st_size > 0, name


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_urls_and_each_is_served(
    client: httpx.AsyncClient, page: str
) -> None:
    html = (await client.get(page)).text
    urls = _urls_in(html)
    assert any(url.endswith(".js") for url in urls), html
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url}"
        assert not url.startswith("//"), f"{page} loads {url}"
        response = await client.get(url)
        assert response.status_code == 200, url
        assert response.content, url


@pytest.mark.skipif(
    headless_chromium() is None,
    reason="no headless Chromium (apt-get install chromium-headless-shell); the test above "
    "still checks that /docs references only local URLs, each served",
)
def test_docs_and_redoc_show_the_operations_in_a_browser_with_the_network_cut(
    tmp_path: Path,
) -> None:
    env = environment(tmp_path)
    upgraded = fastpost("db", "upgrade", env=env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    with serve_fastpost(env=env, cwd=tmp_path) as server:
        docs = _rendered(f"{server.base}/docs", tmp_path / "docs")
        redoc = _rendered(f"{server.base}/redoc", tmp_path / "redoc")
    # Swagger UI renders one block per operation once its script ran and read /openapi.json.
    assert docs.count('class="opblock ') >= 20, docs[-3000:]
    assert "/posts/{post_id}" in docs
    # ReDoc: a section per operation, named by its summary.
    assert redoc.count('id="operation/') >= 20, redoc[-3000:]
    assert "List Posts" in redoc


def _rendered(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium with no network but
    loopback."""
    browser = subprocess.run(
        [
            str(headless_chromium()),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            # The network cut: no name resolves, and whatever goes by address is sent to
            # a proxy that is not there. Loopback (the server) is exempt from both.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert browser.returncode == 0, browser.stderr[-2000:]
    return browser.stdout

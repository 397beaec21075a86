"""`/docs` (Swagger UI) and `/redoc` served from files installed with fastpost.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so without internet `/docs` is a
blank page. The `fastapi-offline` package ships those assets; we serve them from its folder
with FastAPI's documented self-hosting helpers (`get_swagger_ui_html`, `get_redoc_html`).
`tests/test_api_docs.py` loads `/docs` in a browser with the network cut.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
# The package's data folder, not an API of it: pinned below 2 in pyproject.toml, and
# tests/test_api_docs.py fails loudly when a file moves.
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def install_offline_docs(
    app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc"
) -> None:
    """Serve Swagger UI at `docs_url` and ReDoc at `redoc_url` with local assets only.

    The app must be created with `docs_url=None, redoc_url=None`.
    """
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # Google Fonts is a CDN too: ReDoc falls back to the system's fonts.
            with_google_fonts=False,
        )

    app.add_api_route(docs_url, swagger_ui, include_in_schema=False)
    app.add_api_route(oauth2_redirect_url, oauth2_redirect, include_in_schema=False)
    app.add_api_route(redoc_url, redoc, include_in_schema=False)

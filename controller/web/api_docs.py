"""The API's own documentation (Swagger UI, ReDoc) served from bundled assets: a lab network often
has no route to a CDN.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from .context import AppContext
from .queries import NotFound


def register_api_docs(app: FastAPI, ctx: AppContext) -> None:
    """Add /docs, /redoc and the patched ReDoc bundle."""
    docs_assets = ctx.docs_assets

    def _no_docs_assets() -> HTMLResponse:
        return HTMLResponse("<p>The API documentation's assets are not installed: "
                            "<code>pip install fastapi-offline</code> (part of <code>synthloop[web]</code>). "
                            "The schema itself is at <a href='/openapi.json'>/openapi.json</a>.</p>", 503)

    @app.get("/docs", include_in_schema=False)
    def page_docs() -> HTMLResponse:
        if docs_assets is None:
            return _no_docs_assets()
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} — API",
                                   swagger_js_url="/static-docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static-docs/swagger-ui.css",
                                   swagger_favicon_url="/static-docs/favicon.png")

    redoc_js: list[bytes] = []

    @app.get("/docs-assets/redoc.js", include_in_schema=False)
    def redoc_script() -> Response:
        """ReDoc's bundle with its one outside fetch (the vendor's logo from a CDN) pointed home."""
        if docs_assets is None:
            raise NotFound("the API documentation's assets are not installed (pip install fastapi-offline)")
        if not redoc_js:
            text = (docs_assets / "redoc.standalone.js").read_bytes()
            redoc_js.append(text.replace(b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"/static-docs/favicon.png"))
        return Response(redoc_js[0], media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/redoc", include_in_schema=False)
    def page_redoc() -> HTMLResponse:
        if docs_assets is None:
            return _no_docs_assets()
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} — API",
                              redoc_js_url="/docs-assets/redoc.js",
                              redoc_favicon_url="/static-docs/favicon.png", with_google_fonts=False)


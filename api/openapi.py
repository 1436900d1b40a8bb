"""The served OpenAPI document, made to describe what the API really does."""

from __future__ import annotations

from litestar import Litestar


def complete_schema(app: Litestar) -> None:
    """Litestar matches paths without their trailing slash; the API is documented (and
    called) with it, so the OpenAPI document lists every /api/ path as served: ".../"."""
    schema = app.openapi_schema
    if schema.paths:
        schema.paths = {(path + "/" if path.startswith("/api/") and not path.endswith("/") else path): item
                        for path, item in schema.paths.items()}

"""The OpenAPI document describes every route with its responses."""

from __future__ import annotations

import httpx


async def test_every_operation_documents_its_success_model_and_errors(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 20
    for path, method, op in operations:
        success = [code for code in op["responses"] if code.startswith("2")]
        assert success, f"{method} {path} documents no success response"
        if success != ["204"]:
            content = op["responses"][success[0]]["content"]["application/json"]["schema"]
            assert content, f"{method} {path} has no response schema"
        if path.startswith(("/posts", "/users", "/auth", "/feed")):
            errors = [code for code in op["responses"] if code[0] in "45"]
            assert errors, f"{method} {path} documents no error response"


async def test_protected_routes_declare_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/auth/login"
    assert spec["paths"]["/feed"]["get"]["security"]

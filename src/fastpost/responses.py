"""JSON serialised once, straight to bytes, for the hot read routes.

Read routes build their body from rows they just read, in the shape of their declared
response model (which still documents them in OpenAPI), and return it through
`json_response`: FastAPI skips validating and re-serialising a returned Response. On a page
of 20 posts pydantic's validate + dump costs several times orjson's dump of the same dicts
(`python -m timeit` on the two shows it); benchmarks/bench_reads.py shows the effect on
requests per second, beside asyncpg + orjson.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

# Timestamps as "...Z". SQLite hands them back naive: they were written in UTC.
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def dump_json(data: Any) -> bytes:
    return orjson.dumps(data, option=_OPTIONS)


def json_response(data: Any, status_code: int = 200) -> Response:
    return Response(dump_json(data), status_code, media_type="application/json")

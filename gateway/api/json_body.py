"""JSON answers encoded by orjson, for routes whose answers are long lists (a subject's truths,
a page of records): the standard library's encoder takes several times longer to write them.

Only for bodies that hold what the stores hold (JSON from parsed requests, integers within 64
bits: records refuse larger ones), which orjson encodes exactly as json would."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def json_body(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")

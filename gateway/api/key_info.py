"""``GET /keys/self``: which project the calling key belongs to and what its scopes are.

Not part of the Mnexium contract. A client that adapts to its key (the dashboard hides the
edit buttons of a read-only key) asks here instead of trying a write to see it refused. Any
valid key may ask, whatever its scopes: the answer tells the caller only what its own key
already is (never a key, a digest or another key's scopes). The server still checks every
call's scope; this only spares a client from offering what would be refused.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.routing import ANY_VALID_KEY, Call, endpoint


async def key_self(call: Call) -> Response:
    principal = call.credentials.principal
    return JSONResponse({"project_id": principal.project_id, "key_name": principal.key_name,
                         "scopes": sorted(principal.scopes)})


# Relative to the /api/v1 mount.
routes = [Route("/keys/self", endpoint(key_self, scope=ANY_VALID_KEY), methods=["GET"])]

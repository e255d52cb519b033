"""``GET /subjects/{subject_id}/export``: everything stored about one subject, as JSONL.

The access half of the privacy promise (``DELETE /subjects/{id}`` is the erasure half): the
subject's memories with every version and their claims, profile, records, chat history and
summaries, agent state, subject-scoped prompts and policies, cached integration values and
recall events, in the format ``mnx-gateway import`` loads (gateway/export/).

Scope ``subjects:export``: the export holds more than any one read scope grants (history,
memories, state...), so it has a scope of its own, beside ``subjects:delete``; the coarse
``read`` scope grants it as it grants every one of those reads. A subject the project has no
data for (another project's, or none at all) gets a file with its header and end line only:
subjects have no registry, and a 404 would tell another project which ids exist here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.export.dump import export_lines
from gateway.routing import Call, endpoint


async def export_subject(call: Call) -> Response:
    subject_id = call.request.path_params["subject_id"]
    lines = export_lines(call.services.store, call.project_id, subject_id)
    # The header and the first line read from the store (or the end line) are made here: a store
    # that is down answers 503 in the error shape rather than a stream cut after its header.
    first = [await anext(lines), await anext(lines)]

    async def body() -> AsyncIterator[bytes]:
        for chunk in first:
            yield chunk
        async for chunk in lines:
            yield chunk

    return StreamingResponse(body(), media_type="application/x-ndjson",
                             headers={"content-disposition": 'attachment; filename="subject-export.jsonl"'})


# Relative to the /api/v1 mount.
routes = [Route("/subjects/{subject_id}/export", endpoint(export_subject, scope="subjects:export"), methods=["GET"])]

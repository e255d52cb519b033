"""``GET /api/v1/state``: a subject's state keys, sorted, without their values, on SQLite and Redis.

Expired and deleted keys are not listed, nor another subject's, nor another project's under the
same subject id; ``limit`` cuts the sorted list (clamped to 1-1000, as on every list route); a
missing X-Subject-ID is the same 400 that ``GET /state/{key}`` answers.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from tests.conftest import KEY_B, wait_until

SUBJECT = "state-lister"


def put(rest: httpx.Client, key: str, value: Any, subject: str = SUBJECT, **body: Any) -> dict[str, Any]:
    response = rest.put(f"/state/{key}", headers={"x-subject-id": subject}, json={"value": value, **body})
    assert response.status_code == 200, response.text
    return response.json()


def listed(rest: httpx.Client, subject: str = SUBJECT, **params: Any) -> httpx.Response:
    return rest.get("/state", headers={"x-subject-id": subject}, params=params)


def test_a_subjects_live_keys_are_listed_sorted_without_values(gateway_on):
    with gateway_on.rest() as rest, gateway_on.rest(KEY_B) as rest_b:
        written = {key: put(rest, key, {"big": "x" * 1000, "key": key}) for key in ("plan", "agent/step", "zeta")}
        written["cache"] = put(rest, "cache", [1, 2, 3], ttl_seconds=3600)
        put(rest, "gone", "deleted soon")
        assert rest.delete("/state/gone", headers={"x-subject-id": SUBJECT}).json()["deleted"] is True
        put(rest, "short-lived", "expires", ttl_seconds=1)
        put(rest, "not-mine", "another subject's", subject="someone-else")
        put(rest_b, "project-b-key", "project B's, same subject id")
        # Expired: gone for every reader (the store's TTL), the listing included.
        assert wait_until(lambda: rest.get("/state/short-lived", headers={"x-subject-id": SUBJECT}).status_code == 404,
                          timeout=5)

        answer = listed(rest)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert [item["key"] for item in body["data"]] == ["agent/step", "cache", "plan", "zeta"]
        assert body["count"] == 4
        for item in body["data"]:
            assert set(item) == {"key", "ttl", "updated_at"}  # never the value
            assert item["updated_at"] == written[item["key"]]["updated_at"]
            assert item["ttl"] == written[item["key"]]["ttl"]
        ttl = {item["key"]: item["ttl"] for item in body["data"]}
        assert ttl["plan"] is None
        assert datetime.fromisoformat(ttl["cache"]).timestamp() > time.time() + 3500

        # Another project's state under the same subject id is its own, and the other way round.
        assert [item["key"] for item in listed(rest_b).json()["data"]] == ["project-b-key"]
        assert [item["key"] for item in listed(rest, "someone-else").json()["data"]] == ["not-mine"]
        assert listed(rest, "nobody").json() == {"data": [], "count": 0}


def test_limit_cuts_the_sorted_list_and_bad_requests_are_refused(gateway_on):
    with gateway_on.rest() as rest:
        for key in ("c", "a", "d", "b"):
            put(rest, key, key)
        first = listed(rest, limit=2).json()
        assert ([item["key"] for item in first["data"]], first["count"]) == (["a", "b"], 2)
        # Out of range is clamped, as every list route's limit (1 to 1000); a non-number is a 400.
        assert [item["key"] for item in listed(rest, limit=0).json()["data"]] == ["a"]
        assert listed(rest, limit=5000).json()["count"] == 4
        answer = listed(rest, limit="many")
        assert answer.status_code == 400, answer.text
        assert (answer.json()["error"], answer.json()["param"]) == ("invalid_limit", "limit"), answer.text

        # Without X-Subject-ID: the same 400 as reading one key.
        no_subject = rest.get("/state")
        one_key = rest.get("/state/a")
        assert no_subject.status_code == one_key.status_code == 400
        assert no_subject.json() == one_key.json()
        assert no_subject.json()["error"] == "missing_subject_id"

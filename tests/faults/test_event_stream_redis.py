"""Memory events across gateways survive a Redis restart: the listener subscribes again, the sender retries."""

from __future__ import annotations

import logging

import httpx

from tests.conftest import KEY, wait_until
from tests.test_event_stream import Subscriber, create_memory


def test_events_flow_between_gateways_again_after_redis_restarts(start_gateway, private_redis, caplog):
    caplog.set_level(logging.WARNING, logger="gateway.events")
    storage = {"backend": "redis", "redis": {"url": private_redis.url, "key_prefix": "t:", "pool_timeout_seconds": 1,
                                             "socket_timeout_seconds": 1}}
    writer, reader = start_gateway(storage), start_gateway(storage)
    with Subscriber(reader, subject_id="ev-restart") as subscriber:
        create_memory(writer, "ev-restart", "User grows tomatoes")
        subscriber.wait_for(lambda frames: len(frames) == 1)

        private_redis.kill()
        private_redis.start()  # empty: no persistence

        def stored_again() -> bool:
            response = httpx.post(writer.api + "/memories", json={"subject_id": "ev-restart",
                                                                  "text": "User grows sweet peppers"},
                                  headers={"x-mnexium-key": KEY}, timeout=10)
            return response.status_code in (200, 201)

        assert wait_until(stored_again, timeout=20, interval=0.2)
        frames = subscriber.wait_for(lambda frames: any(f.data.get("text") == "User grows sweet peppers"
                                                        for f in frames), timeout=20)
        assert [f.event for f in frames] == ["memory.created", "memory.created"]
    assert any("lost the Redis subscription" in record.getMessage() for record in caplog.records)

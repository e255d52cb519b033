"""Writers of one subject's claims (or profile) take turns.

The truth graph and profiles read whole documents, decide, and store them again: two writers
of the same subject at once could both read "no truth yet" and leave a slot two truths, or
put back a claim another had just retracted. Each such write therefore holds the subject's
lock for its reads and writes.

``SubjectLocks`` covers the writers in this process (striped asyncio locks: a fixed number,
however many subjects). ``RedisSubjectLocks`` adds a lease in Redis (``SET NX PX``), taken
inside the local lock, so that gateways sharing one Redis take turns too. A lease expires by
itself (``lease_seconds``) if its gateway dies holding it; a writer that cannot get one within
``wait_seconds`` is refused with 503 rather than waiting forever.

An operation takes its subject's lock once, at the top. Each user (claims, profiles) has its own
``name``, so one may be held while the other is taken. One operation may hold two different keys
of the same locks (a record type's schema, then each of its records): the stripes are shared by
many keys, so the task that holds a stripe passes it again (``_Stripe``), or two keys on one
stripe would wait for each other forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from gateway.errors import GatewayError

_STRIPES = 64

# Deletes the lease only if it is still ours (it may have expired and been taken by another).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _digest(project_id: str, subject_id: str) -> bytes:
    return hashlib.blake2b(f"{project_id}\0{subject_id}".encode(), digest_size=8).digest()


class _Stripe:
    """An asyncio lock that the task holding it passes again (nested holds of keys that share it)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            yield  # already this task's: the outer hold releases it
            return
        async with self._lock:
            self._owner = task
            try:
                yield
            finally:
                self._owner = None


class SubjectLocks:
    def __init__(self, name: str) -> None:
        self.name = name
        self._stripes = [_Stripe() for _ in range(_STRIPES)]

    def hold(self, project_id: str, subject_id: str) -> AbstractAsyncContextManager[Any]:
        """``async with locks.hold(project, subject):`` around one operation's reads and writes."""
        return self._local(project_id, subject_id)

    def _local(self, project_id: str, subject_id: str) -> AbstractAsyncContextManager[None]:
        return self._stripes[int.from_bytes(_digest(project_id, subject_id)[:4], "big") % _STRIPES].held()


class RedisSubjectLocks(SubjectLocks):
    def __init__(self, name: str, client: Any, key_prefix: str, *, lease_seconds: float = 30,
                 wait_seconds: float = 10) -> None:
        super().__init__(name)
        self._client = client
        self._prefix = key_prefix
        self._lease_ms = int(lease_seconds * 1000)
        self._wait_seconds = wait_seconds

    def hold(self, project_id: str, subject_id: str) -> AbstractAsyncContextManager[Any]:
        return self._leased(project_id, subject_id)

    @asynccontextmanager
    async def _leased(self, project_id: str, subject_id: str) -> AsyncIterator[None]:
        # The local lock first: writers in this process queue here, not by polling Redis.
        async with self._local(project_id, subject_id):
            # {project} is the Redis Cluster hash tag, as for the project's other keys.
            key = (f"{self._prefix}{{{quote(project_id, safe='')}}}:lock:{self.name}:"
                   f"{_digest(project_id, subject_id).hex()}")
            token = secrets.token_hex(8)
            deadline = time.monotonic() + self._wait_seconds
            pause = 0.002
            while not await self._client.set(key, token, nx=True, px=self._lease_ms):
                if time.monotonic() >= deadline:
                    raise GatewayError(f"another gateway has been writing this subject's {self.name} for "
                                       f"{self._wait_seconds:.0f} s; retry later", code="subject_busy", status=503)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
            try:
                yield
            finally:
                await self._client.eval(_RELEASE, 1, key, token)  # one key: any cluster slot will do

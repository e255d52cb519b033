"""What keeps work started before a subject's erasure from writing its data back.

A turn is recorded, and a learn job runs, some time after the request that caused it:
between the two, the subject may be erased. Deleting the data is not enough then: a job
still queued (or already running) would store its memories a moment later, and the
personal text would be back. So every such write (a learn job, an index repair, a turn's
history, recall events and learn job) happens inside ``writing(project, subject, since)``,
where ``since`` is when the work began (the turn's start, the job's creation), and erasure
works in this order:

1. ``mark_erased``: a tombstone (erased at T). A writer that enters after it sees it and
   writes nothing (``SubjectErased``) if its work began before T.
2. the subject's queued jobs are deleted (gateway.erasure);
3. ``wait_for_writers``: writers that entered before the tombstone finish;
4. the data is deleted. Nothing can write it back after that.

A writer registers before it reads the tombstone, and the eraser writes the tombstone
before it counts writers, so each sees the other: either the eraser waits for the
writer, or the writer sees the tombstone. ``LocalErasureFence`` does this in one process
(the embedded backend: every job runs in the gateway that erases); ``RedisErasureFence``
across every gateway sharing a Redis, with writer registrations that expire (a gateway
that dies mid-write must not block erasures forever).

A writer still inside its section when the eraser stops waiting (``WRITERS_WAIT_SECONDS``;
an embedding call stuck until its timeout) checks the tombstone again when it leaves and
erases the subject again (gateway.erasure).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import quote

from gateway.store.redis_client import RedisClient

# How long a tombstone is kept: longer than any work that was running when the subject was
# erased can still be running (a job's lease, a provider's read timeout). Only the subject
# id and a time are kept.
TOMBSTONE_SECONDS = 7 * 24 * 3600.0
# A registered writer not done after this long is taken for dead by erasures (a gateway
# that died mid-write holds erasures of that subject up to this long).
WRITER_TTL_SECONDS = 20.0
# How long an erasure waits for writers already inside a section before going ahead (a write
# still running then erases the subject again when it ends: gateway.erasure).
WRITERS_WAIT_SECONDS = 10.0


class SubjectErased(Exception):
    """The subject was erased after this work began: it must write nothing."""


class ErasureFence(Protocol):
    async def enter(self, project_id: str, subject_id: str, since: float) -> str:
        """Register a writer; raise SubjectErased if the subject was erased at or after ``since``."""

    async def leave(self, project_id: str, subject_id: str, token: str) -> None:
        """Unregister a writer."""

    async def enter_many(self, project_id: str, sinces: Mapping[str, float]) -> dict[str, str]:
        """Register a writer for each subject of ``sinces`` not erased at or after its since, in one
        step (one round trip on Redis); returns the admitted subjects' tokens."""

    async def leave_many(self, project_id: str, tokens: Mapping[str, str]) -> None:
        """Unregister the writers ``enter_many`` registered."""

    async def erased_after(self, project_id: str, subject_id: str, since: float) -> bool:
        """Whether the subject was erased at or after ``since``."""

    async def mark_erased(self, project_id: str, subject_id: str) -> None:
        """Write the tombstone (erased now)."""

    async def wait_for_writers(self, project_id: str, subject_id: str, timeout: float) -> bool:
        """Wait until no writer is inside a section for the subject; False if ``timeout`` ran out."""


class LocalErasureFence:
    """One process holds every writer (the embedded SQLite backend). A tombstone only has to
    outlive work in this process, which ends with it, so tombstones live in memory."""

    def __init__(self) -> None:
        self._erased: dict[tuple[str, str], float] = {}
        self._writers: dict[tuple[str, str], int] = {}
        self._idle = asyncio.Condition()

    def _erased_at(self, key: tuple[str, str]) -> float | None:
        erased_at = self._erased.get(key)
        if erased_at is not None and erased_at + TOMBSTONE_SECONDS < time.time():
            del self._erased[key]
            return None
        return erased_at

    async def enter(self, project_id: str, subject_id: str, since: float) -> str:
        key = (project_id, subject_id)
        erased_at = self._erased_at(key)
        if erased_at is not None and erased_at >= since:
            raise SubjectErased(subject_id)
        self._writers[key] = self._writers.get(key, 0) + 1
        return ""

    async def leave(self, project_id: str, subject_id: str, token: str) -> None:
        key = (project_id, subject_id)
        remaining = self._writers.get(key, 1) - 1
        if remaining:
            self._writers[key] = remaining
            return
        self._writers.pop(key, None)
        async with self._idle:
            self._idle.notify_all()

    async def enter_many(self, project_id: str, sinces: Mapping[str, float]) -> dict[str, str]:
        tokens = {}
        for subject_id, since in sinces.items():
            try:
                tokens[subject_id] = await self.enter(project_id, subject_id, since)
            except SubjectErased:
                pass
        return tokens

    async def leave_many(self, project_id: str, tokens: Mapping[str, str]) -> None:
        for subject_id, token in tokens.items():
            await self.leave(project_id, subject_id, token)

    async def erased_after(self, project_id: str, subject_id: str, since: float) -> bool:
        erased_at = self._erased_at((project_id, subject_id))
        return erased_at is not None and erased_at >= since

    async def mark_erased(self, project_id: str, subject_id: str) -> None:
        now = time.time()
        self._erased[(project_id, subject_id)] = now
        for key in [k for k, at in self._erased.items() if at + TOMBSTONE_SECONDS < now]:
            del self._erased[key]

    async def wait_for_writers(self, project_id: str, subject_id: str, timeout: float) -> bool:
        key = (project_id, subject_id)
        try:
            async with self._idle:
                await asyncio.wait_for(self._idle.wait_for(lambda: key not in self._writers), timeout)
        except TimeoutError:
            return False
        return True


# KEYS: tombstone and writers of each subject, in pairs. ARGV: token, writer expiry (epoch s),
# writers key ttl (ms), then each subject's since. Returns 1 (registered) or 0 (erased) per subject.
# Atomic: a writer is either registered before the tombstone exists, or refused.
_ENTER = """
local entered = {}
for i = 1, #KEYS / 2 do
  local erased = redis.call('GET', KEYS[2 * i - 1])
  if erased and tonumber(erased) >= tonumber(ARGV[3 + i]) then
    entered[i] = 0
  else
    redis.call('ZADD', KEYS[2 * i], ARGV[2], ARGV[1])
    redis.call('PEXPIRE', KEYS[2 * i], ARGV[3])
    entered[i] = 1
  end
end
return entered
"""


class RedisErasureFence:
    """Every gateway sharing a Redis: tombstones and writer registrations live there.

    Keys, for prefix ``P``, project ``p``, subject ``s`` (``{p}`` is the project's Cluster
    hash tag, as in the document store): ``P{p}:erasure:erased:<s>`` the tombstone (the
    erasure's epoch time, expiring), ``P{p}:erasure:writers:<s>`` a sorted set of writer
    tokens scored by when each registration expires. ``_ENTER`` and the MULTI of
    ``wait_for_writers`` touch those two keys only: one slot on a cluster.
    """

    def __init__(self, client: RedisClient, key_prefix: str) -> None:
        self._redis = client  # the gateway's shared client, closed by its owner
        self._prefix = key_prefix
        self._enter = client.register_script(_ENTER)

    def _keys(self, project_id: str, subject_id: str) -> tuple[str, str]:
        base = f"{self._prefix}{{{quote(project_id, safe='')}}}:erasure:"
        subject = quote(subject_id, safe="")
        return base + "erased:" + subject, base + "writers:" + subject

    async def enter(self, project_id: str, subject_id: str, since: float) -> str:
        tokens = await self.enter_many(project_id, {subject_id: since})
        if subject_id not in tokens:
            raise SubjectErased(subject_id)
        return tokens[subject_id]

    async def leave(self, project_id: str, subject_id: str, token: str) -> None:
        await self._redis.zrem(self._keys(project_id, subject_id)[1], token)

    async def enter_many(self, project_id: str, sinces: Mapping[str, float]) -> dict[str, str]:
        if not sinces:
            return {}
        # One token for all: each subject has its own writers set, so it is unique within each.
        token = secrets.token_hex(8)
        expiry = time.time() + WRITER_TTL_SECONDS
        keys = [key for subject_id in sinces for key in self._keys(project_id, subject_id)]
        entered = await self._enter(keys=keys, args=[token, repr(expiry), int(WRITER_TTL_SECONDS * 2000),
                                                     *(repr(since) for since in sinces.values())])
        return {subject_id: token for subject_id, admitted in zip(sinces, entered) if admitted}

    async def leave_many(self, project_id: str, tokens: Mapping[str, str]) -> None:
        if tokens:
            # One round trip; the keys share the project's hash tag (one slot on a cluster).
            async with self._redis.pipeline(transaction=False) as pipe:
                for subject_id, token in tokens.items():
                    pipe.zrem(self._keys(project_id, subject_id)[1], token)
                await pipe.execute()

    async def erased_after(self, project_id: str, subject_id: str, since: float) -> bool:
        erased = await self._redis.get(self._keys(project_id, subject_id)[0])
        return erased is not None and float(erased) >= since

    async def mark_erased(self, project_id: str, subject_id: str) -> None:
        await self._redis.set(self._keys(project_id, subject_id)[0], repr(time.time()),
                              px=int(TOMBSTONE_SECONDS * 1000))

    async def wait_for_writers(self, project_id: str, subject_id: str, timeout: float) -> bool:
        writers = self._keys(project_id, subject_id)[1]
        deadline = time.monotonic() + timeout
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(writers, "-inf", time.time())  # registrations of dead gateways
                pipe.zcard(writers)
                _, active = await pipe.execute()
            if not active:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

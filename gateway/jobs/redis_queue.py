"""The shared job queue on Redis, for any number of gateways.

Layout, for key prefix ``P`` (``{jobs}`` is a Cluster hash tag: every key of the queue is in
one slot, so the Lua scripts and MULTI/EXEC below stay atomic on a cluster; the queue then
lives on one master, whose load is a few commands per turn):

* ``P{jobs}:due``        sorted set of job ids scored by when each is due
* ``P{jobs}:job:<id>``   hash: project_id, kind, payload, status, attempts, last_error, created_at,
  and ``lease``, the token of the claim that leased it last (gateway/jobs/queue.py)
* ``P{jobs}:p:<project>`` sorted set of a project's unfinished job ids, by creation time

A sorted set rather than a stream: one structure gives delayed retries (the score
is the retry time), leases (claiming pushes the score to the lease's end, so a job
whose worker died becomes due again by itself) and a cheap list of what is waiting.
With Redis's append-only file on, an enqueued job survives a Redis restart too.

Each call that acts on a claim (renew, complete, retry_later) is a Lua script that compares the
job's ``lease`` with the caller's token and writes only if they match: the check and the write
are one atomic step on the master, so a worker whose lease ran out and whose job another gateway
claimed since cannot delete, reschedule or extend that gateway's run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from gateway.ids import ordered_id
from gateway.jobs.queue import Job, JobLeased
from gateway.store import codec
from gateway.store.redis_client import RedisClient, connect_redis

# KEYS: due set, job key prefix (not a key: where the job hashes it reads and writes begin,
# P{jobs}:job:, in the due set's slot). ARGV: now, limit, lease end, lease token. No blocking
# command: a worker polls claim, so nothing holds a cluster connection waiting.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local jobs = {}
for _, id in ipairs(ids) do
  local key = KEYS[2] .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], id)  -- its hash is gone: nothing to run
  else
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'lease', ARGV[4])
    jobs[#jobs + 1] = {id, redis.call('HGETALL', key)}
  end
end
return jobs
"""

# KEYS: job hash, due set. ARGV: lease token, new lease end, job id.
_RENEW = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS: job hash, due set, project set prefix (like the claim's job prefix: not a key, the
# start of P{jobs}:p:<project>, in the same slot). ARGV: job id, lease token ('' for whoever
# holds it: the enqueuer withdrawing its own job).
_COMPLETE = """
local project_id = redis.call('HGET', KEYS[1], 'project_id')
if not project_id then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3] .. project_id, ARGV[1])
return 1
"""

# KEYS: job hash, due set. ARGV: error, due time, job id, lease token. A job deleted meanwhile
# (completed, voided by an erasure) is not recreated by its late failure report, nor is a job
# another worker claimed since rescheduled under it.
_RETRY_LATER = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'last_error', ARGV[1])
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS: job hash, due set. ARGV: project id, job id, now. Returns {0} (no such job in this project),
# {2} (a worker holds a live lease: left alone) or {1, due, fields} (due now, or already). The
# score goes back as the string ZSCORE gives: a Lua number would be truncated to an integer.
_RETRY_NOW = """
if redis.call('HGET', KEYS[1], 'project_id') ~= ARGV[1] then return {0} end
local due = redis.call('ZSCORE', KEYS[2], ARGV[2])
if not due then return {0} end
if tonumber(due) > tonumber(ARGV[3]) then
  if redis.call('HEXISTS', KEYS[1], 'lease') == 1 then return {2} end
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  due = ARGV[3]
end
return {1, due, redis.call('HGETALL', KEYS[1])}
"""

# How many of a project's jobs an erasure reads per round trip.
_VOID_BATCH = 500


class RedisJobQueue:
    def __init__(self, redis: str | RedisClient, key_prefix: str, *, cluster: bool = False) -> None:
        """``redis``: a client shared with the rest of the gateway (not closed here), or a URL
        to open one of its own (a Redis Cluster's seed node with ``cluster``)."""
        self._owns_client = isinstance(redis, str)
        # Any: the client decodes replies to str (connect_redis), which redis-py's types cannot say.
        self._redis: Any = connect_redis(redis, cluster=cluster) if isinstance(redis, str) else redis
        base = f"{key_prefix}{{jobs}}:"
        self._due = base + "due"
        self._job_prefix = base + "job:"
        self._project_prefix = base + "p:"
        self._claim = self._redis.register_script(_CLAIM)
        self._renew = self._redis.register_script(_RENEW)
        self._complete = self._redis.register_script(_COMPLETE)
        self._retry_later = self._redis.register_script(_RETRY_LATER)
        self._retry_now = self._redis.register_script(_RETRY_NOW)

    def _job(self, job_id: str, fields: dict[str, str], due_at: float, lease: str | None = None) -> Job:
        return Job(id=job_id, project_id=fields["project_id"], kind=fields["kind"],
                   payload=codec.decode(fields["payload"]), status=fields["status"],
                   attempts=int(fields.get("attempts", 0)), last_error=fields.get("last_error") or None,
                   due_at=due_at, created_at=float(fields["created_at"]), lease=lease)

    async def enqueue(self, project_id: str, kind: str, payload: dict[str, Any], *,
                      delay_seconds: float = 0.0) -> str:
        job_id = ordered_id("job_")
        now = time.time()
        await self._write_new(job_id, {"project_id": project_id, "kind": kind, "payload": codec.encode(payload),
                                       "status": "pending", "attempts": 0, "last_error": "", "created_at": now},
                              due_at=now + delay_seconds)
        return job_id

    async def enqueue_claimed(self, project_id: str, kind: str, payload: dict[str, Any],
                              lease_seconds: float) -> Job:
        job_id = ordered_id("job_")
        now = time.time()
        lease = secrets.token_hex(8)
        fields = {"project_id": project_id, "kind": kind, "payload": codec.encode(payload), "status": "pending",
                  "attempts": "1", "last_error": "", "created_at": str(now), "lease": lease}
        await self._write_new(job_id, fields, due_at=now + lease_seconds)
        # Read as a claim would read it back: the payload a copy, in JSON's types.
        return self._job(job_id, fields, now + lease_seconds, lease)

    async def _write_new(self, job_id: str, fields: Mapping[str, Any], *, due_at: float) -> None:
        # P{jobs}:job:<id>, P{jobs}:due, P{jobs}:p:<project>: one slot.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._job_prefix + job_id, mapping=fields)
            pipe.zadd(self._due, {job_id: due_at})
            pipe.zadd(self._project_prefix + fields["project_id"], {job_id: float(fields["created_at"])})
            await pipe.execute()

    async def claim(self, limit: int, lease_seconds: float) -> list[Job]:
        now = time.time()
        lease_end = now + lease_seconds
        lease = secrets.token_hex(8)
        rows = await self._claim(keys=[self._due, self._job_prefix], args=[now, limit, lease_end, lease])
        return [self._job(job_id, dict(zip(flat[::2], flat[1::2])), lease_end, lease) for job_id, flat in rows]

    async def renew(self, job_id: str, lease: str, lease_seconds: float) -> bool:
        return bool(await self._renew(keys=[self._job_prefix + job_id, self._due],
                                      args=[lease, time.time() + lease_seconds, job_id]))

    async def complete(self, job_id: str, lease: str | None = None) -> bool:
        return bool(await self._complete(keys=[self._job_prefix + job_id, self._due, self._project_prefix],
                                         args=[job_id, lease or ""]))

    async def retry_later(self, job_id: str, error: str, delay_seconds: float, *, lease: str) -> bool:
        return bool(await self._retry_later(keys=[self._job_prefix + job_id, self._due],
                                            args=[error[:2000], time.time() + delay_seconds, job_id, lease]))

    async def retry_now(self, project_id: str, job_id: str) -> Job | None:
        # The hash's project is checked in the script: a job id is all a caller names.
        reply = await self._retry_now(keys=[self._job_prefix + job_id, self._due],
                                      args=[project_id, job_id, time.time()])
        if reply[0] == 0:
            return None
        if reply[0] == 2:
            raise JobLeased(job_id)
        flat = reply[2]
        return self._job(job_id, dict(zip(flat[::2], flat[1::2])), float(reply[1]))

    async def void_subject(self, project_id: str, subject_id: str) -> list[str]:
        # Erasure is rare: reading the project's unfinished jobs is simpler than keeping
        # a per-subject index on every enqueue, and it also finds jobs enqueued by older versions.
        voided: list[str] = []
        project_jobs = self._project_prefix + project_id
        ids = await self._redis.zrange(project_jobs, 0, -1)
        for start in range(0, len(ids), _VOID_BATCH):
            batch = ids[start:start + _VOID_BATCH]
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in batch:
                    pipe.hget(self._job_prefix + job_id, "payload")
                payloads = await pipe.execute()
            for job_id, payload in zip(batch, payloads):
                if payload is not None and codec.decode(payload).get("subject_id") == subject_id:
                    voided.append(job_id)
        if voided:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._due, *voided)
                pipe.zrem(project_jobs, *voided)
                pipe.delete(*(self._job_prefix + job_id for job_id in voided))
                await pipe.execute()
        return voided

    async def unfinished(self, project_id: str, limit: int) -> list[Job]:
        jobs = []
        for job_id in await self._redis.zrange(self._project_prefix + project_id, 0, limit - 1):
            fields = await self._redis.hgetall(self._job_prefix + job_id)
            due = await self._redis.zscore(self._due, job_id)
            if fields and due is not None:
                jobs.append(self._job(job_id, fields, due))
        return jobs

    async def release_leases(self) -> int:
        return 0  # Other gateways may hold leases: expiry alone brings abandoned jobs back.

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

"""Trial keys: a key-less proxy request gets a key of its own (contract §14), when enabled.

Off unless ``auth.trial.enabled``. Then a chat request (``/chat/completions``, ``/responses``,
``/messages``) that carries no project key at all is served in a trial project bound to its
device: the SHA-256 of the client's address and User-Agent. The first such request mints a
``mnx_trial.`` key (stored hashed, as every stored key) and answers it once, in the
``X-Mnx-Key-Provisioned`` / ``X-Mnx-Claim-Url`` headers and the ``mnx.provisioned_key`` /
``mnx.claim_url`` body fields; later key-less requests from the same device use it silently.
``mnx.regenerate_key: true`` revokes the trial project's keys and answers a new one (the
project and its data stay). Trial keys do not expire; turning trials off refuses them.

The client address is the TCP peer's: behind a reverse proxy every caller shares the proxy's
address and devices are told apart by User-Agent alone.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from starlette.requests import Request

from gateway.config import TrialConfig
from gateway.errors import BadRequest, ConfigError
from gateway.keys.store import TRIAL_PREFIX, TRIAL_PROJECT_PREFIX, KeyStore, StoredKey, check_scopes

# Where a request keeps the key minted for it, for the response's headers and body.
_STATE_FIELD = "mnx_provisioned_key"
# Two first requests from one device must not mint two keys: they take turns on one of these
# (a fixed number, so memory stays bounded whatever the number of devices).
_LOCK_STRIPES = 64


@dataclass(frozen=True)
class Provisioned:
    """A trial key minted by this request, to be answered once."""

    key: str
    claim_url: str

    def headers(self) -> dict[str, str]:
        return {"X-Mnx-Key-Provisioned": self.key, "X-Mnx-Claim-Url": self.claim_url}


def provisioned(request: Request) -> Provisioned | None:
    """The trial key this request minted, if it minted one."""
    found = getattr(request.state, _STATE_FIELD, None)
    return found if isinstance(found, Provisioned) else None


def device_fingerprint(request: Request) -> str:
    address = request.client.host if request.client is not None else ""
    user_agent = request.headers.get("user-agent", "")
    return hashlib.sha256(f"mnx-trial\n{address}\n{user_agent}".encode()).hexdigest()


def trial_project_id(fingerprint: str) -> str:
    return TRIAL_PROJECT_PREFIX + fingerprint[:32]


class TrialKeys:
    def __init__(self, keys: KeyStore, config: TrialConfig) -> None:
        self._keys = keys
        self._claim_url = config.claim_url
        try:
            self._scopes = list(check_scopes(config.scopes))
        except BadRequest as error:  # at startup: the config file is what is wrong
            raise ConfigError(f"auth.trial.scopes: {error.message}") from None
        self._locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]

    def _lock(self, fingerprint: str) -> asyncio.Lock:
        return self._locks[int(fingerprint[:8], 16) % _LOCK_STRIPES]

    async def _mint(self, request: Request, fingerprint: str) -> StoredKey:
        key, record = await self._keys.create(trial_project_id(fingerprint), name="trial", scopes=self._scopes,
                                              prefix=TRIAL_PREFIX, fingerprint=fingerprint)
        setattr(request.state, _STATE_FIELD, Provisioned(key, self._claim_url))
        return record

    async def for_device(self, request: Request) -> StoredKey:
        """The record of the requesting device's trial key, minted now if it has none in use."""
        fingerprint = device_fingerprint(request)
        async with self._lock(fingerprint):
            for record in await self._keys.with_fingerprint(fingerprint):
                if record.status() == "active":
                    return record
            return await self._mint(request, fingerprint)

    async def regenerate(self, request: Request, project_id: str) -> None:
        """Revoke the trial project's keys and mint it a new one (for ``mnx.regenerate_key``).
        A project that is not a trial project is left alone."""
        if not project_id.startswith(TRIAL_PROJECT_PREFIX) or provisioned(request) is not None:
            return  # not a trial, or this very request minted its key already
        records = await self._keys.in_project(project_id)
        fingerprint = next((record.fingerprint for record in records if record.fingerprint), None)
        if fingerprint is None:
            return
        async with self._lock(fingerprint):
            for record in records:
                if record.revoked_at is None:
                    await self._keys.revoke(record.key_id)
            await self._mint(request, fingerprint)

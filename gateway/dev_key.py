"""The development key, and the one place it may be accepted: a gateway only this machine reaches.

The shipped gateway.yaml accepts ``mnx_live_local_dev_key`` whenever ``MNX_API_KEY`` is
unset, so that the first ``mnx-gateway serve`` needs no setup. That key is printed in
the README: a gateway that accepts it and listens beyond loopback is open to anyone who
can reach it. ``mnx-gateway serve`` refuses to start that way unless told
``--allow-dev-key`` (then it warns loudly).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging

from gateway.config import GatewayConfig
from gateway.errors import ConfigError

DEV_KEY = "mnx_live_local_dev_key"
_DEV_KEY_SHA256 = hashlib.sha256(DEV_KEY.encode()).hexdigest()

log = logging.getLogger("gateway")


def accepts_dev_key(config: GatewayConfig) -> bool:
    """Whether some project takes the development key (as ``key`` or as its ``key_sha256``)."""
    return any(key.digest() == _DEV_KEY_SHA256 for project in config.projects for key in project.keys)


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only. An empty host (every
    interface) or any other name counts as reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_dev_key_exposure(config: GatewayConfig, host: str, *, allowed: bool) -> None:
    """Refuse (ConfigError) to listen on ``host`` beyond loopback while the development key
    is accepted, unless ``allowed``; then log a warning instead."""
    if is_loopback(host) or not accepts_dev_key(config):
        return
    if not allowed:
        raise ConfigError(f"refusing to listen on {host} while the public development key {DEV_KEY} is accepted: "
                          "set MNX_API_KEY (or configure a key of your own), listen on 127.0.0.1, "
                          "or pass --allow-dev-key if this network is yours alone")
    log.warning("LISTENING ON %s WITH THE PUBLIC DEVELOPMENT KEY %s: anyone who can reach this address can use "
                "the gateway and its provider keys, and read every memory (--allow-dev-key)", host, DEV_KEY)

"""Project keys managed at run time, beside the ones gateway.yaml lists.

* ``store``: keys kept (hashed) in the document store: created, listed, revoked, rotated.
* ``commands``: ``mnx-gateway keys create|list|revoke|rotate``.
* ``trial``: trial keys minted for key-less proxy requests (off unless ``auth.trial.enabled``).

``gateway.auth`` reads both kinds: configured keys first (in memory), stored keys second.
"""

"""Integrations (contract §16): values from the project's own systems, pulled from an endpoint
or pushed by a signed webhook, cached per project, subject or chat for prompts to use.

* ``definitions``: the integration object, its validation and its public shape (no secrets);
* ``addresses``: which hosts and addresses an outbound call may reach;
* ``templates`` / ``output_map``: the request a pull sends, and the values read from its answer;
* ``fetch``: the outbound call itself (pinned address, no redirects, size and time limits);
* ``cache``: the values kept per (integration, scope id), shared by every gateway through the store;
* ``webhook``: signature, timestamp and event-id checks of pushed values;
* ``service``: what the REST routes call; ``values``: what the rest of the gateway reads.
"""

from gateway.integrations.service import Integrations
from gateway.integrations.values import IntegrationValues

__all__ = ["IntegrationValues", "Integrations"]

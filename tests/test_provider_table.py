"""The provider table (gateway/proxy/providers.py) agrees with what ships: the environment
variable each provider's "no key" error names is the one the shipped gateway.yaml reads that
provider's key from, and every configurable provider has a record."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.config import ProvidersConfig
from gateway.proxy.providers import PROVIDERS

SHIPPED = Path(__file__).resolve().parent.parent / "gateway.yaml"


def test_each_provider_names_the_variable_the_shipped_config_reads_its_key_from():
    providers = yaml.safe_load(SHIPPED.read_text())["providers"]
    assert set(providers) == set(PROVIDERS)
    for name, provider in PROVIDERS.items():
        assert providers[name]["api_key"] == f"${{{provider.key_variable}:-}}", name


def test_every_configurable_provider_has_a_record():
    assert set(ProvidersConfig.model_fields) == set(PROVIDERS)

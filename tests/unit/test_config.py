"""Configuration: defaults, the annotated config.toml, env overrides, clear errors."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from recsrv.config import Config
from recsrv.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_committed_config_toml_lists_every_key_with_its_default() -> None:
    with open(ROOT / "config.toml", "rb") as f:
        data = tomllib.load(f)
    defaults = Config()
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        values = getattr(defaults, section.name)
        keys = {f.name for f in dataclasses.fields(values)}
        assert set(data[section.name]) == keys, section.name
        for key in keys:
            expected = getattr(values, key)
            written = data[section.name][key]
            assert (tuple(written) if isinstance(written, list) else written) == expected, (
                f"{section.name}.{key}"
            )
    assert Config.load(ROOT / "config.toml", env={}).broker == defaults.broker


def test_defaults_are_embedded_mode() -> None:
    config = Config.from_mapping({})
    assert config.broker.url == "memory://"
    assert config.store.url == "file://./data"
    assert config.embedded
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.broker.exchange == "recsrv.events"
    assert config.broker.queue == "recsrv.events.stream"
    assert config.broker.invalid_exchange == "recsrv.events.invalid"
    assert config.broker.max_age == "7D"
    assert config.store.checkpoint_interval_s == 60
    assert (config.auth.public_rate_per_s, config.auth.public_burst) == (50, 100)


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[broker]\nurl = "amqp://a/"\n[server]\nport = 9000\n')
    env = {
        "RECSRV_BROKER__URL": "amqp://guest:guest@127.0.0.1:5672/",
        "RECSRV_AUTH__SECRET_KEYS": "k1, k2",
        "RECSRV_MODEL__EXCLUDE_SEEN_ITEMS": "false",
        "RECSRV_SESSIONS__TTL_S": "60",
    }
    config = Config.load(path, env=env)
    assert config.broker.url == "amqp://guest:guest@127.0.0.1:5672/"
    assert config.server.port == 9000
    assert config.auth.secret_keys == ("k1", "k2")
    assert config.model.exclude_seen_items is False
    assert config.sessions.ttl_s == 60.0


@pytest.mark.parametrize(
    ("data", "env", "key"),
    [
        ({"server": {"port": 70000}}, {}, "server.port"),
        ({"server": {"port": "80"}}, {}, "server.port"),
        ({"broker": {"url": "http://x"}}, {}, "broker.url"),
        ({"broker": {"max_age": "7 days"}}, {}, "broker.max_age"),
        ({"store": {"url": "s3://bucket"}}, {}, "store.url"),
        ({"log": {"level": "loud"}}, {}, "log.level"),
        ({"server": {"colour": "blue"}}, {}, "server.colour"),
        ({"nonsense": {}}, {}, "nonsense"),
        ({}, {"RECSRV_SERVER__PORT": "eighty"}, "server.port"),
        ({}, {"RECSRV_MODEL__EXCLUDE_SEEN_ITEMS": "maybe"}, "model.exclude_seen_items"),
        ({"auth": {"secret_keys": "abc"}}, {}, "auth.secret_keys"),
        ({"server": {"after_timeout_ms": -1}}, {}, "server.after_timeout_ms"),
        ({}, {"RECSRV_SERVER__INSTANCE": "a\nb"}, "server.instance"),
        ({"server": {"instance": "x" * 129}}, {}, "server.instance"),
    ],
)
def test_invalid_configuration_names_the_key(
    data: dict[str, dict[str, object]], env: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(data, env)
    assert info.value.key == key
    assert key in str(info.value)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(bad, env={})


@pytest.mark.parametrize(
    ("data", "env", "key"),
    [
        ({"auth": {"secret_keys": ["has space"]}}, {}, "auth.secret_keys[0]"),
        ({}, {"RECSRV_AUTH__PUBLIC_KEYS": "pk_ok,pk_\u00e9t\u00e9"}, "auth.public_keys[1]"),
        ({"auth": {"public_keys": ["k" * 257]}}, {}, "auth.public_keys[0]"),
        (
            {"auth": {"secret_keys": ["dup_key"], "public_keys": ["dup_key"]}},
            {},
            "auth.public_keys",
        ),
        ({"auth": {"cors_origins": ["https://shop.example/"]}}, {}, "auth.cors_origins[0]"),
        ({"auth": {"cors_origins": ["https://Shop.example"]}}, {}, "auth.cors_origins[0]"),
        ({"auth": {"cors_origins": ["*"]}}, {}, "auth.cors_origins[0]"),
        ({"auth": {"public_burst": -1}}, {}, "auth.public_burst"),
        ({"server": {"trusted_proxies": ["10.0.0.0/33"]}}, {}, "server.trusted_proxies[0]"),
        ({"server": {"trusted_proxies": ["proxy.local"]}}, {}, "server.trusted_proxies[0]"),
        ({"server": {"sse_max_per_client": 0}}, {}, "server.sse_max_per_client"),
        ({"server": {"max_query_params": 0}}, {}, "server.max_query_params"),
    ],
)
def test_invalid_security_settings_name_the_key_but_never_a_key(
    data: dict[str, dict[str, object]], env: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(data, env)
    assert info.value.key == key
    message = str(info.value)
    for value in ("has space", "pk_\u00e9t\u00e9", "k" * 257, "dup_key"):
        assert value not in message


def test_security_settings_from_the_environment() -> None:
    env = {
        "RECSRV_AUTH__SECRET_KEYS": "sk_1,sk_2",
        "RECSRV_AUTH__PUBLIC_KEYS": "pk_1",
        "RECSRV_AUTH__CORS_ORIGINS": "https://shop.example, http://[::1]:8080",
        "RECSRV_AUTH__PROTECT_METRICS": "true",
        "RECSRV_SERVER__TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1,::1",
    }
    config = Config.from_mapping({}, env)
    assert config.auth.secret_keys == ("sk_1", "sk_2")
    assert config.auth.public_keys == ("pk_1",)
    assert config.auth.cors_origins == ("https://shop.example", "http://[::1]:8080")
    assert config.auth.protect_metrics is True
    assert not config.auth.open
    assert config.server.trusted_proxies == ("10.0.0.0/8", "127.0.0.1", "::1")
    assert Config.from_mapping({}).auth.open


def test_keys_never_appear_in_a_printed_configuration() -> None:
    config = Config.from_mapping({}, {"RECSRV_AUTH__SECRET_KEYS": "sk_very_secret"})
    assert config.auth.secret_keys == ("sk_very_secret",)
    assert "sk_very_secret" not in repr(config)
    assert "sk_very_secret" not in str(config.auth)

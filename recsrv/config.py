"""Configuration: one frozen dataclass per section of config.toml.

Values come from, in order of precedence: environment variables
`RECSRV_<SECTION>__<KEY>`, the TOML file, the defaults below. Every value is
checked once, at load time; a bad one raises ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsrv.errors import ConfigError

ENV_PREFIX = "RECSRV_"
# What a key and a CORS origin may look like.
_KEY = re.compile(r"[\x21-\x7e]{1,256}")
_ORIGIN = re.compile(r"https?://[a-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9a-f:.]+\](:[0-9]{1,5})?")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4 * 1024 * 1024
    max_request_events: int = 1000
    shutdown_timeout_s: float = 10.0
    # Server-Sent Events.
    sse_heartbeat_s: float = 15.0
    sse_coalesce_s: float = 0.025
    sse_send_timeout_s: float = 10.0
    sse_max_subscribers: int = 10_000
    sse_max_per_session: int = 8
    sse_max_per_client: int = 100
    # Query strings: how many parameters, and how long in all (400 beyond).
    max_query_params: int = 32
    max_query_chars: int = 4096
    # Peers (addresses or networks) whose Forwarded / X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = ()
    # How long a list request with after=EVENT_ID waits for that event.
    after_timeout_ms: int = 500
    # This replica's name, in logs, /readyz and metrics; empty: host and pid.
    instance: str = ""

    def instance_name(self) -> str:
        """`instance`, or this host's name and this process's pid when it is empty."""
        return self.instance or f"{socket.gethostname()}-{os.getpid()}"

    def validate(self) -> None:
        _check_range("server.port", self.port, 0, 65535)
        _check_range("server.sse_max_per_client", self.sse_max_per_client, 1, 10**7)
        _check_range("server.max_query_params", self.max_query_params, 1, 10_000)
        _check_range("server.max_query_chars", self.max_query_chars, 64, 1 << 20)
        _check_range("server.after_timeout_ms", self.after_timeout_ms, 0, 60_000)
        if len(self.instance) > 128 or not self.instance.isprintable():
            raise ConfigError("server.instance", "must be at most 128 printable characters")
        for index, proxy in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    f"server.trusted_proxies[{index}]",
                    f"{proxy!r} is not an IP address or network (e.g. 10.0.0.0/8)",
                ) from None
        _check_range("server.sse_heartbeat_s", self.sse_heartbeat_s, 0.1, 3600)
        _check_range("server.sse_coalesce_s", self.sse_coalesce_s, 0, 10)
        _check_range("server.sse_send_timeout_s", self.sse_send_timeout_s, 0.1, 3600)
        _check_range("server.sse_max_subscribers", self.sse_max_subscribers, 1, 10**7)
        _check_range("server.sse_max_per_session", self.sse_max_per_session, 1, 10**4)
        _check_range("server.max_body_bytes", self.max_body_bytes, 1024, 1 << 30)
        _check_range("server.max_request_events", self.max_request_events, 1, 1_000_000)
        _check_range("server.shutdown_timeout_s", self.shutdown_timeout_s, 0, 3600)


@dataclass(frozen=True)
class BrokerConfig:
    url: str = "memory://"
    exchange: str = "recsrv.events"
    queue: str = "recsrv.events.stream"
    invalid_exchange: str = "recsrv.events.invalid"
    max_age: str = "7D"
    prefetch: int = 2000
    ack_every: int = 200
    max_message_events: int = 10_000
    ready_lag: int = 100
    connect_timeout_s: float = 10.0

    def validate(self) -> None:
        if not (self.url.startswith(("amqp://", "amqps://")) or self.url == "memory://"):
            raise ConfigError("broker.url", "must be amqp://… , amqps://… or memory://")
        for key in ("exchange", "queue", "invalid_exchange"):
            if not getattr(self, key):
                raise ConfigError(f"broker.{key}", "must not be empty")
        if not _is_max_age(self.max_age):
            raise ConfigError("broker.max_age", "must be a number and a unit Y, M, D, h, m or s")
        _check_range("broker.prefetch", self.prefetch, 1, 65535)
        _check_range("broker.ack_every", self.ack_every, 1, self.prefetch)
        _check_range("broker.max_message_events", self.max_message_events, 1, 10_000)
        _check_range("broker.ready_lag", self.ready_lag, 0, 10**12)
        _check_range("broker.connect_timeout_s", self.connect_timeout_s, 0.1, 600)


@dataclass(frozen=True)
class StoreConfig:
    url: str = "file://./data"
    checkpoint_interval_s: float = 60.0
    keep_checkpoints: int = 3
    # Of the replicas that share a store, the one holding this lease writes the
    # checkpoints; it lasts this long without renewal (renewed every third of it).
    lease_s: float = 30.0

    def validate(self) -> None:
        if not self.url.startswith(("mongodb://", "mongodb+srv://", "file://")):
            raise ConfigError("store.url", "must be mongodb://… or file://PATH")
        if self.url == "file://":
            raise ConfigError("store.url", "file:// needs a directory path")
        _check_range("store.checkpoint_interval_s", self.checkpoint_interval_s, 1, 86400)
        _check_range("store.keep_checkpoints", self.keep_checkpoints, 1, 100)
        _check_range("store.lease_s", self.lease_s, 1, 3600)


@dataclass(frozen=True)
class ModelConfig:
    # How much each interaction type counts, for similarity and popularity.
    weight_view: float = 1.0
    weight_click: float = 2.0
    weight_add_to_cart: float = 4.0
    weight_purchase: float = 6.0
    # Event-time half-lives of the decayed signals.
    popularity_half_life_s: float = 3 * 86400.0
    similarity_half_life_s: float = 30 * 86400.0
    # Item-to-item learning.
    neighbors: int = 50
    window: int = 5
    position_decay: float = 0.7
    backward_weight: float = 0.5
    max_basket_lines: int = 50
    # Scoring of a session's candidates.
    recency_decay: float = 0.8
    bought_together_weight: float = 1.0
    # Times the shop's repeat-purchase rate (learnt from the events): past purchases
    # lead in grocery (rate ~0.6 → weight ~10) and barely count in fashion.
    user_history_weight: float = 16.0
    # Only for requests whose session has no events yet.
    user_neighbors_weight: float = 0.5
    # How many of a user's heaviest profile items lend their similar rows to a list
    # (bounds the work of a request for a user with a long history).
    user_neighbor_items: int = 30
    exclude_cart_items: bool = True
    exclude_seen_items: bool = True
    # Event ids remembered for de-duplication.
    dedup_window: int = 100_000
    # Sequential rules: an item is paired with what follows it within this many
    # events of a session, weighted 1/distance.
    sr_steps: int = 10
    # Neighbour sessions: how many recent sessions are indexed, how many per item are
    # remembered, how many of the most recent candidates are compared, how many of
    # the most similar lend their items, how fast a neighbour's weight falls with its
    # distance in time (e-folding, seconds; 0: not at all), and the weight of rare
    # items (IDF). Off by default: on MovieLens and Instacart replayed in their files'
    # order, 14 days cost 10-15% of HR@20, and sorted by time it changed HR by ±0.005.
    index_sessions: int = 100_000
    knn_per_item: int = 100
    knn_sample: int = 500
    knn_neighbors: int = 100
    knn_recency_s: float = 0.0
    knn_idf_weight: float = 1.0
    # The blend: after the first 4,096 measured (prequential.WARM_UP), every how many
    # eligible events one is measured and learnt from (1 measures every event).
    blend_every: int = 64

    def validate(self) -> None:
        for name in ("weight_view", "weight_click", "weight_add_to_cart", "weight_purchase"):
            _check_range(f"model.{name}", getattr(self, name), 0, 1e6)
        _check_range("model.popularity_half_life_s", self.popularity_half_life_s, 1, 1e10)
        _check_range("model.similarity_half_life_s", self.similarity_half_life_s, 1, 1e10)
        _check_range("model.neighbors", self.neighbors, 1, 1000)
        _check_range("model.window", self.window, 1, 100)
        _check_range("model.position_decay", self.position_decay, 0, 1)
        _check_range("model.backward_weight", self.backward_weight, 0, 1)
        _check_range("model.max_basket_lines", self.max_basket_lines, 1, 500)
        _check_range("model.recency_decay", self.recency_decay, 0, 1)
        for name in ("bought_together_weight", "user_history_weight", "user_neighbors_weight"):
            _check_range(f"model.{name}", getattr(self, name), 0, 1e6)
        _check_range("model.user_neighbor_items", self.user_neighbor_items, 0, 100_000)
        _check_range("model.dedup_window", self.dedup_window, 0, 100_000_000)
        _check_range("model.sr_steps", self.sr_steps, 1, 100)
        _check_range("model.index_sessions", self.index_sessions, 1, 100_000_000)
        _check_range("model.knn_per_item", self.knn_per_item, 1, 10_000)
        _check_range("model.knn_sample", self.knn_sample, 1, 100_000)
        _check_range("model.knn_neighbors", self.knn_neighbors, 1, 100_000)
        _check_range("model.knn_recency_s", self.knn_recency_s, 0, 1e10)
        _check_range("model.knn_idf_weight", self.knn_idf_weight, 0, 1e6)
        _check_range("model.blend_every", self.blend_every, 1, 1_000_000)


@dataclass(frozen=True)
class SessionsConfig:
    ttl_s: float = 1800.0
    # How long, on the model clock, a session's state is held after its last event
    # arrived, beyond ttl_s, so that a late event still joins it (a watermark's
    # allowed lateness). A later event of a reclaimed session starts it afresh.
    allowed_lateness_s: float = 86400.0
    max_sessions: int = 100_000
    max_events: int = 50
    max_user_items: int = 200

    def validate(self) -> None:
        _check_range("sessions.ttl_s", self.ttl_s, 1, 1e9)
        _check_range("sessions.allowed_lateness_s", self.allowed_lateness_s, 0, 1e10)
        _check_range("sessions.max_sessions", self.max_sessions, 1, 100_000_000)
        _check_range("sessions.max_events", self.max_events, 1, 1000)
        _check_range("sessions.max_user_items", self.max_user_items, 1, 100_000)


@dataclass(frozen=True)
class AuthConfig:
    # Keys stay out of repr, so a logged config or traceback never shows one.
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    public_keys: tuple[str, ...] = field(default=(), repr=False)
    cors_origins: tuple[str, ...] = ()
    public_rate_per_s: float = 50.0
    public_burst: int = 100
    # /metrics needs a secret key (else it is open, like /healthz and /readyz).
    protect_metrics: bool = False

    @property
    def open(self) -> bool:
        """No key configured: every request is allowed (with a warning at start)."""
        return not (self.secret_keys or self.public_keys)

    def validate(self) -> None:
        _check_range("auth.public_rate_per_s", self.public_rate_per_s, 0, 1e6)
        _check_range("auth.public_burst", self.public_burst, 0, 10**6)
        for name in ("secret_keys", "public_keys"):
            for index, key in enumerate(getattr(self, name)):
                # Messages name the position, never the key.
                if not _KEY.fullmatch(key):
                    raise ConfigError(
                        f"auth.{name}[{index}]",
                        "a key must be 1-256 printable ASCII characters without spaces",
                    )
        if set(self.secret_keys) & set(self.public_keys):
            raise ConfigError("auth.public_keys", "a key is listed as both secret and public")
        for index, origin in enumerate(self.cors_origins):
            if not _ORIGIN.fullmatch(origin):
                raise ConfigError(
                    f"auth.cors_origins[{index}]",
                    f"{origin!r} is not an origin: scheme://host[:port] in lower case, "
                    "no path and no trailing slash (e.g. https://shop.example)",
                )


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    # "auto" means console on a terminal, json otherwise.
    format: str = "auto"

    def validate(self) -> None:
        if self.level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError("log.level", "must be debug, info, warning, error or critical")
        if self.format not in ("auto", "json", "console"):
            raise ConfigError("log.format", "must be auto, json or console")


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "defaults"

    @property
    def embedded(self) -> bool:
        return self.broker.url == "memory://" or self.store.url.startswith("file://")

    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
        """Read `path` (or ./config.toml if it exists), then apply env overrides."""
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        source = "defaults"
        if path is None and Path("config.toml").is_file():
            path = "config.toml"
        if path is not None:
            try:
                with open(path, "rb") as f:
                    data = tomllib.load(f)
            except OSError as exc:
                raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from exc
            source = str(path)
        return cls.from_mapping(data, env, source=source)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None, source: str = "dict"
    ) -> Config:
        env = {} if env is None else env
        sections: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "source":
                continue
            raw = data.get(f.name, {})
            if not isinstance(raw, Mapping):
                raise ConfigError(f.name, "must be a table")
            section = _build_section(f.name, hints[f.name], raw, env)
            section.validate()
            sections[f.name] = section
        unknown = set(data) - set(sections)
        if unknown:
            raise ConfigError(sorted(unknown)[0], "unknown section")
        return cls(**sections, source=source)


def _build_section(name: str, klass: Any, raw: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(klass)
    names = {f.name for f in dataclasses.fields(klass)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"{name}.{key}", "unknown key")
    values: dict[str, Any] = {}
    for key in names:
        env_name = f"{ENV_PREFIX}{name.upper()}__{key.upper()}"
        if env_name in env:
            values[key] = _from_env(f"{name}.{key}", hints[key], env[env_name])
        elif key in raw:
            values[key] = _coerce(f"{name}.{key}", hints[key], raw[key])
    return klass(**values)


def _from_env(key: str, hint: Any, text: str) -> Any:
    if _is_str_tuple(hint):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if hint is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected true or false, got {text!r}")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {text!r}") from None
    return text


def _coerce(key: str, hint: Any, value: Any) -> Any:
    if _is_str_tuple(hint):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, "expected a list of strings")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, "expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, "expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, "expected a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(key, "expected a string")
    return value


def _is_str_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple or isinstance(hint, types.GenericAlias)


def redact_url(url: str) -> str:
    """The URL without its user and password, for logs and messages."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return scheme + sep + authority + slash + path


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(key, f"must be between {low:g} and {high:g}, got {value!r}")


def _is_max_age(text: str) -> bool:
    return len(text) >= 2 and text[:-1].isdigit() and text[-1] in "YMDhms"

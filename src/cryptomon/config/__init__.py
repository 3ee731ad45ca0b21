"""Configuration: one TOML file decoded into frozen msgspec Structs.

`load_config(path)` reads the file (or the bundled provider catalogue when
`path` is None), checks every value and returns a `Config`. A file with
mistakes raises one `ConfigError` listing all of them, each naming the file,
the provider, the dotted key and what was expected, so a user fixes a file in
one pass instead of one error per run.

Durations are strings such as "500ms", "30s", "5m", "1h" or "1d"; the Structs
keep the text as written and expose the length in seconds through properties.
API keys never enter a Struct: a provider names the environment variable that
holds its key, and the key is read from the environment when it is needed.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
from croniter import CroniterBadDateError, croniter

from cryptomon.config.conditions import ConditionError, parse_condition, parse_observation

Category = Literal[
    "market_data",
    "exchanges",
    "blockchain_explorers",
    "defi_analytics",
    "rpc_nodes",
    "news",
    "sentiment",
]
CATEGORIES: tuple[str, ...] = get_args(Category)
# `optional`: the provider takes a key but is probed without one while it is unset.
KeyStatus = Literal["configured", "unconfigured", "not_needed", "optional"]
HttpMethod = Literal["GET", "POST", "HEAD"]
ENV_PREFIX = "env:"
# Without a degraded_latency, a probe slower than this is degraded; half the timeout when
# the timeout is not longer than it (a "2s" timeout alone is a valid provider).
DEFAULT_DEGRADED_LATENCY_SECONDS = 2.0

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# RFC 9110 token characters: anything else makes aiohttp refuse the header.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_OBSERVATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# A region's name: lower-case letters, digits and dashes (it is in stream names, lock
# keys, metric labels and the User-Agent).
# A region's name (`[instance] region`, a provider's `regions`, `?region=`).
REGION_PATTERN = "[a-z0-9][a-z0-9-]{0,31}"
_REGION = re.compile(REGION_PATTERN)


def parse_duration(text: str) -> float:
    """The length of a duration such as "500ms", "30s", "5m", "1h" or "1d", in seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: expected a number and a unit "
            '(ms, s, m, h or d), like "500ms", "30s" or "5m"'
        )
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a usable duration: expected more than zero")
    return seconds


def mask_key(key: str) -> str:
    """Enough of a key to tell two keys apart in a UI, never enough to use it."""
    return "***" if len(key) < 8 else f"{key[:4]}…"


class _Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every TOML table: immutable, and an unknown key is an error."""


class ServerConfig(_Table, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 7860
    # The name of the variable holding the bearer token for write endpoints.
    api_token_env: str = "CRYPTOMON_API_TOKEN"
    # The name of the variable holding the read token: set, every read (REST and the live
    # feed) needs it or the API token, but the health probes, the badges, the dashboard's
    # page and files and the API's document. Unset: reads are open.
    read_token_env: str | None = None
    cors_origins: tuple[str, ...] = ()
    # Per client address: sustained requests a second, the burst allowed on
    # top, and open live-feed connections. Past them: 429 with Retry-After.
    requests_per_second: Annotated[float, msgspec.Meta(gt=0)] = 100.0
    request_burst: Annotated[int, msgspec.Meta(ge=1)] = 1000
    websocket_connections_per_address: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # Addresses of reverse proxies whose X-Forwarded-For names the client: the limits
    # count, and the no-token loopback rule checks, that client instead of the proxy.
    trusted_proxies: tuple[str, ...] = ()
    # Reload the file when its modification time changes (looked at every 2 s), as SIGHUP
    # and POST /api/config/reload do.
    watch_config: bool = False


class InstanceConfig(_Table, frozen=True):
    """`[instance]`: this instance among others on one PostgreSQL log."""

    # Where it probes from (`serve --region` wins): instances of one region divide that
    # region's providers, and every region probes every provider (or those naming it).
    # Unset: no region, as a single instance has always run.
    region: str | None = None
    # Whose snapshot rows it keeps on a PostgreSQL log (each instance its own); unset: the
    # host name and port. Give each instance its own, stable across restarts.
    name: str | None = None


class StorageConfig(_Table, frozen=True):
    database: str = "data/cryptomon.db"
    # A postgresql:// URL puts the event log in PostgreSQL instead of the SQLite file.
    # Its password is a secret: never shown (leave it out and set PGPASSWORD instead).
    url: str | None = None
    # Probe events older than this move out of the database into archive
    # segments (the rollups keep their history); unset keeps every event.
    archive_after: str | None = None
    # Where the segments are: an absolute path. Unset: beside the SQLite file
    # (`<database>.archive`); a log on PostgreSQL needs it to archive, and every instance
    # and audit must see the same directory.
    archive_dir: str | None = None
    snapshot_interval: str = "5m"
    # Closed incidents are kept this long after they ended (by the events' time).
    incident_retention: str = "90d"

    def __repr__(self) -> str:
        # The URL may carry a password: a repr lands in tracebacks and log lines.
        url = None if self.url is None else "***"
        return f"StorageConfig(database={self.database!r}, url={url!r}, ...)"

    @property
    def target(self) -> str:
        """Where the event log lives: the PostgreSQL URL if set, else the SQLite file."""
        return self.url if self.url is not None else self.database

    @property
    def archive_path(self) -> Path | None:
        return None if self.archive_dir is None else Path(self.archive_dir)

    @property
    def archive_after_seconds(self) -> float | None:
        return None if self.archive_after is None else parse_duration(self.archive_after)

    @property
    def snapshot_interval_seconds(self) -> float:
        return parse_duration(self.snapshot_interval)

    @property
    def incident_retention_seconds(self) -> float:
        return parse_duration(self.incident_retention)


class WebSocketConfig(_Table, frozen=True):
    status_interval: str = "10s"
    heartbeat_interval: str = "30s"

    @property
    def status_interval_seconds(self) -> float:
        return parse_duration(self.status_interval)

    @property
    def heartbeat_interval_seconds(self) -> float:
        return parse_duration(self.heartbeat_interval)


class MonitoringConfig(_Table, frozen=True):
    """Thresholds the projections use to move a provider between statuses."""

    offline_after_failures: Annotated[int, msgspec.Meta(ge=1)] = 3
    online_after_successes: Annotated[int, msgspec.Meta(ge=1)] = 2
    # Probes a failure ratio needs in its window before it changes a status (`degraded`
    # from recent failures) or raises a `failure_rate` alert.
    failure_ratio_min_probes: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    # Time left on a provider's TLS certificate that raises a warning, then a critical alert.
    certificate_warning: str = "14d"
    certificate_critical: str = "3d"
    # Whether probes inside a maintenance window count in uptime (they never raise alerts).
    maintenance_counts_in_uptime: bool = False

    @property
    def certificate_warning_seconds(self) -> float:
        return parse_duration(self.certificate_warning)

    @property
    def certificate_critical_seconds(self) -> float:
        return parse_duration(self.certificate_critical)


class ChainConfig(_Table, frozen=True):
    """`[chains.<name>]`: how the nodes of one chain are judged against each other. A key
    left out takes the chain's default (`cryptomon.projections.chains.CHAIN_DEFAULTS`)."""

    # The chain id every node must answer (observed as `chain_id`), as a number or "0x..".
    chain_id: int | str | None = None
    # Lagging: more than `lag_blocks` behind the best head for `lag_probes` probes in a row.
    lag_blocks: Annotated[int, msgspec.Meta(ge=0)] | None = None
    lag_probes: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Stale: the head did not move while the best head moved more than `stale_blocks`; a
    # chain with one node: the head did not move for `stale_after`.
    stale_blocks: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stale_after: str | None = None


class QuotesConfig(_Table, frozen=True):
    """`[quotes]`: how the prices providers quote for one pair are judged."""

    # Deviating: more than this many percent off the pair's median, `deviation_probes` in a row.
    deviation_percent: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    deviation_probes: Annotated[int, msgspec.Meta(ge=1)] = 2
    # Stale: the time the answer says its data is from (`price_time`) is older than this.
    max_staleness: str = "60s"

    @property
    def max_staleness_seconds(self) -> float:
        return parse_duration(self.max_staleness)


class RateLimit(_Table, frozen=True):
    requests: Annotated[int, msgspec.Meta(ge=1)]
    per: str
    # Where the number comes from: the provider's page (a URL), or "unverified" when the
    # provider publishes none and the number is a conservative guess.
    source: str | None = None

    @property
    def per_seconds(self) -> float:
        return parse_duration(self.per)


class RpcCall(_Table, frozen=True):
    """One JSON-RPC 2.0 call: `rpc = { method = "eth_blockNumber", params = [] }`."""

    method: str
    params: list[Any] | dict[str, Any] = msgspec.field(default_factory=list)


class ProbeRequest(_Table, frozen=True, kw_only=True):
    """What one probe sends and what its answer must show: shared by a provider's health
    probe and its collections. Conditions and observations are Gatus-style expressions,
    checked when the file loads (see `cryptomon.config.conditions`)."""

    method: HttpMethod | None = None  # GET, or POST when there is a body
    headers: dict[str, str] = {}  # a value "env:NAME" comes from that variable: a secret
    body: Any = None  # sent as JSON
    rpc: RpcCall | tuple[RpcCall, ...] | None = None  # a JSON-RPC call, or a batch
    conditions: tuple[str, ...] = ()
    observe: dict[str, str] = {}

    @property
    def http_method(self) -> HttpMethod:
        if self.method is not None:
            return self.method
        return "POST" if self.body is not None or self.rpc is not None else "GET"

    @property
    def json_body(self) -> Any:
        """The JSON document sent, None for none: `body`, or the JSON-RPC envelope."""
        if self.rpc is None:
            return self.body
        if isinstance(self.rpc, RpcCall):
            return _rpc_envelope(self.rpc, 1)
        return [_rpc_envelope(call, index) for index, call in enumerate(self.rpc, 1)]

    @property
    def env_headers(self) -> dict[str, str]:
        """Header name -> the variable its value comes from."""
        return {
            name: value[len(ENV_PREFIX) :]
            for name, value in self.headers.items()
            if value.startswith(ENV_PREFIX)
        }

    def request_headers(self, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
        """The headers to send, with env: values read now, and those values (secrets)."""
        headers: dict[str, str] = {}
        secrets: list[str] = []
        for name, value in self.headers.items():
            if value.startswith(ENV_PREFIX):
                value = environ.get(value[len(ENV_PREFIX) :], "").strip()
                secrets.append(value)
            headers[name] = value
        return headers, secrets


def _rpc_envelope(call: RpcCall, call_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "method": call.method, "params": call.params}


class Collection(ProbeRequest, frozen=True, kw_only=True):
    """A data endpoint probed alongside the health path (a "collection" probe)."""

    path: str
    expect_key: str | None = None
    expect_non_empty: bool = False

    @property
    def body_checks(self) -> tuple[str, ...]:
        """`expect_key` and `expect_non_empty` as the conditions they are (error kind
        `invalid_body`, as before conditions existed)."""
        checks = []
        if self.expect_key is not None:
            checks.append(f"has([BODY].{self.expect_key}) == true")
        if self.expect_non_empty:
            checks.append("len([BODY]) > 0")
        return tuple(checks)


class ProviderConfig(ProbeRequest, frozen=True, kw_only=True):
    """A provider; the request keys it shares with collections shape its health probe."""

    name: str
    category: Category
    base_url: str
    docs: str | None = None  # the provider's API documentation
    health_path: str = ""
    interval: str | None = None
    cron: str | None = None
    timeout: str = "10s"
    degraded_latency: str | None = None
    rate_limit: RateLimit | None = None
    # Only the *name* of the variable: the key itself is read at call time.
    api_key_env: str | None = None
    api_key_header: str | None = None
    api_key_query: str | None = None
    api_key_prefix: str = ""
    # Probe without the key while its variable is unset (a keyless tier exists).
    api_key_optional: bool = False
    # Conditions any of which means "the provider says it is in maintenance".
    maintenance_when: tuple[str, ...] = ()
    enabled: bool = True
    collections: tuple[Collection, ...] = ()
    # The chain whose nodes it is compared with (its `head` observation, and its
    # `chain_id` if observed), and the pair it quotes (its `price`, and `price_time`).
    chain: str | None = None
    quote: str | None = None
    # The regions it is probed from (`[instance] region`); empty: every region. Each
    # region spends the key's requests on its own: fewer regions save quota.
    regions: tuple[str, ...] = ()

    @property
    def observed(self) -> set[str]:
        """The names of the values any of its probes observes."""
        return {name for probe in (self, *self.collections) for name in probe.observe}

    @property
    def interval_seconds(self) -> float | None:
        return None if self.interval is None else parse_duration(self.interval)

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)

    @property
    def degraded_latency_seconds(self) -> float:
        if self.degraded_latency is not None:
            return parse_duration(self.degraded_latency)
        return _default_degraded_latency(self.timeout_seconds)

    @property
    def schedule_text(self) -> str:
        return f"every {self.interval}" if self.interval is not None else f"cron {self.cron}"

    def url(self, path: str) -> str:
        """`base_url` joined with a path ("/ping"), a query ("?module=stats") or nothing."""
        if not path:
            return self.base_url
        if path.startswith("?"):
            return self.base_url + path
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"

    def api_key(self, environ: Mapping[str, str]) -> str | None:
        """The key from `environ`, read on every call so a rotated key needs no restart."""
        if self.api_key_env is None:
            return None
        return environ.get(self.api_key_env, "").strip() or None

    def key_status(self, environ: Mapping[str, str]) -> KeyStatus:
        """Whether every secret this provider needs (its key, its env: headers) is set."""
        if self.missing_env(environ):
            return "unconfigured"
        if self.api_key_env is not None and self.api_key(environ) is None:
            return "optional"
        needs = self.api_key_env is not None or any(
            probe.env_headers for probe in (self, *self.collections)
        )
        return "configured" if needs else "not_needed"

    def missing_env(self, environ: Mapping[str, str]) -> list[str]:
        """The variables that must be set before this provider can be probed."""
        missing = []
        required_key = self.api_key_env is not None and not self.api_key_optional
        if required_key and self.api_key_env is not None and self.api_key(environ) is None:
            missing.append(self.api_key_env)
        for probe in (self, *self.collections):
            for name in probe.env_headers.values():
                if not environ.get(name, "").strip() and name not in missing:
                    missing.append(name)
        return missing

    def probed_in(self, region: str | None) -> bool:
        """Whether an instance of `region` probes it: one naming no regions is probed in
        every region, and an instance without a region probes every provider."""
        return region is None or not self.regions or region in self.regions

    def skip_reason(self, environ: Mapping[str, str]) -> str | None:
        """Why this provider is not probed, or None when it is."""
        if not self.enabled:
            return "disabled"
        missing = self.missing_env(environ)
        if missing:
            return f"set {' and '.join(missing)} to probe it"
        return None

    def request_auth(self, key: str | None) -> tuple[dict[str, str], dict[str, str]]:
        """The headers and query parameters that carry `key` to this provider."""
        if key is None:
            return {}, {}
        if self.api_key_header is not None:
            return {self.api_key_header: self.api_key_prefix + key}, {}
        if self.api_key_query is not None:
            return {}, {self.api_key_query: key}
        return {}, {}


AlertSeverity = Literal["warning", "critical"]
ALERT_SEVERITIES: tuple[AlertSeverity, ...] = get_args(AlertSeverity)
NotifyEvent = Literal["raised", "acknowledged", "resolved", "rate_limit"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)
ChannelKind = Literal["webhook", "slack", "discord", "telegram"]
# What one message is about: an incident (its opening, escalation and closing), or each alert.
NotifyGroup = Literal["incident", "alert"]
# Headers every notification request carries from cryptomon itself.
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "idempotency-key", "x-cryptomon-signature"}
)
# Headers a probe's transport sets: a provider's `headers` may not.
PROBE_RESERVED_HEADERS = frozenset({"content-length", "host", "transfer-encoding"})
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class NotificationChannel(_Table, frozen=True):
    """Where alert and incident notifications go, in which format, and which of them.

    Secrets never enter the Struct: a URL that embeds one (Slack, Telegram) is named by
    `url_env`, a header value written "env:NAME" comes from that variable, and the HMAC
    secret from `hmac_secret_env`; each is read from the environment when a message is sent.
    Empty filters match everything.
    """

    name: str
    kind: ChannelKind
    url: str | None = None
    url_env: str | None = None
    chat_id: int | str | None = None  # telegram only
    headers: dict[str, str] = {}
    hmac_secret_env: str | None = None  # webhook only: X-Cryptomon-Signature
    severities: tuple[AlertSeverity, ...] = ()
    providers: tuple[str, ...] = ()
    categories: tuple[Category, ...] = ()
    events: tuple[NotifyEvent, ...] = NOTIFY_EVENTS
    # "incident": an availability alert is told of as its incident (opened, escalated,
    # closed, reminders); "alert": each alert on its own. Other alerts are always each.
    group: NotifyGroup = "incident"
    renotify_interval: str | None = None
    timeout: str = "10s"

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)

    @property
    def renotify_interval_seconds(self) -> float | None:
        return None if self.renotify_interval is None else parse_duration(self.renotify_interval)


class MaintenanceConfig(_Table, frozen=True):
    """`[[maintenance]]`: a window in which the providers it names (or those of the
    categories it names) are in maintenance: recurring (`cron` and `duration`) or one-off
    (`start` and `end`, ISO 8601 with an offset). The API takes the same keys."""

    name: str
    providers: tuple[str, ...] = ()
    categories: tuple[Category, ...] = ()
    cron: str | None = None
    duration: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def duration_seconds(self) -> float | None:
        return None if self.duration is None else parse_duration(self.duration)


class StatusGroup(_Table, frozen=True):
    """`[[status_page.groups]]`: a heading of the public status page and the providers
    under it, in this order."""

    name: str
    providers: tuple[str, ...]


class StatusPageConfig(_Table, frozen=True):
    """`[status_page]`: the public page at `/status`. `providers` limits which show (none:
    every one); `groups` lists them under headings of your own (none: by category)."""

    enabled: bool = True
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=120)] = "Service status"
    providers: tuple[str, ...] = ()
    groups: tuple[StatusGroup, ...] = ()


class Config(_Table, frozen=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    instance: InstanceConfig = msgspec.field(default_factory=InstanceConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    websocket: WebSocketConfig = msgspec.field(default_factory=WebSocketConfig)
    monitoring: MonitoringConfig = msgspec.field(default_factory=MonitoringConfig)
    providers: tuple[ProviderConfig, ...] = ()
    notifications: tuple[NotificationChannel, ...] = ()
    chains: dict[str, ChainConfig] = {}
    quotes: QuotesConfig = msgspec.field(default_factory=QuotesConfig)
    maintenance: tuple[MaintenanceConfig, ...] = ()
    status_page: StatusPageConfig = msgspec.field(default_factory=StatusPageConfig)
    # The file this came from, for messages; not a key a file may set.
    source: str = ""
    # Where `providers` came from: the file's own, or the bundled catalogue's (a file
    # without a `providers` key); not a key a file may set either.
    providers_source: Literal["file", "catalogue"] = "file"


class ConfigError(Exception):
    """Every mistake found in one configuration file, one message per mistake."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def describe_providers(config: Config, environ: Mapping[str, str]) -> list[str]:
    """One aligned line per provider: name, category, schedule and whether it is probed."""
    rows = []
    for provider in config.providers:
        reason = provider.skip_reason(environ)
        state = "probed" if reason is None else f"skipped: {reason}"
        rows.append((provider.name, provider.category, provider.schedule_text, state))
    widths = [max((len(row[column]) for row in rows), default=0) for column in range(3)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + f"  {row[3]}"
        for row in rows
    ]


def describe_checks(provider: ProviderConfig) -> list[str]:
    """Indented lines for each of the provider's probes that sends more than a GET or
    checks more than its status: the request, its conditions (`expect_key` and
    `expect_non_empty` shown as the conditions they are), maintenance and observations."""
    lines = []
    if provider.chain is not None:
        lines.append(f"    chain {provider.chain}: its head judged against the chain's other nodes")
    if provider.quote is not None:
        lines.append(f"    quote {provider.quote}: its price judged against the pair's median")
    probes: list[tuple[str, ProbeRequest, str, tuple[str, ...], tuple[str, ...]]] = [
        ("health", provider, provider.health_path, (), provider.maintenance_when)
    ]
    probes += [("collection", c, c.path, c.body_checks, ()) for c in provider.collections]
    for label, request, path, body_checks, maintenance in probes:
        conditions = (*body_checks, *request.conditions)
        if not (conditions or maintenance or request.observe or request.http_method != "GET"):
            continue
        rpc = request.rpc
        calls = () if rpc is None else (rpc,) if isinstance(rpc, RpcCall) else rpc
        sent = f" JSON-RPC {', '.join(call.method for call in calls)}" if calls else ""
        lines.append(f"    {label} {request.http_method} {path or '/'}{sent}")
        lines += [f"      must hold:      {condition}" for condition in conditions]
        lines += [f"      maintenance if: {condition}" for condition in maintenance]
        lines += [f"      observe {name} = {text}" for name, text in request.observe.items()]
    return lines


def load_config(path: Path | None = None) -> Config:
    """Read and check a configuration file; None reads the bundled provider catalogue.

    A file without a `providers` key monitors the bundled catalogue, so a file
    that only changes the port still watches every provider; `providers = []`
    monitors none.
    """
    if path is None:
        resource = files("cryptomon.config") / "catalogue.toml"
        return msgspec.structs.replace(
            _parse(resource.read_text(encoding="utf-8"), str(resource), tuple),
            providers_source="catalogue",
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}"]) from None
    return _parse(text, str(path), lambda: load_config().providers)


# --- checking -----------------------------------------------------------------


class _Problems:
    """Collects messages for one file; each names the file, provider and key."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []
        self.found: list[tuple[str, str]] = []  # (key, problem), as `messages` say them

    def add(
        self, key: str, problem: str, provider: str | None = None, *, channel: str | None = None
    ) -> None:
        who = f" (provider {provider!r})" if provider else ""
        who = f" (channel {channel!r})" if channel else who
        # A key may hold any character; escaped, it cannot start a line of its own.
        shown = key.encode("unicode_escape").decode("ascii")
        self.found.append((shown, problem))
        self.messages.append(f"{self.source}: {shown}{who}: {problem}")


def _check_cron(text: str) -> None:
    if not croniter.is_valid(text):
        raise ValueError(
            f'{text!r} is not a cron expression: expected five fields like "*/5 * * * *"'
        )
    try:
        croniter(text, 0.0).get_next(float)
    except CroniterBadDateError:
        raise ValueError(f"{text!r} never fires (no such date)") from None


def _check_base_url(text: str) -> None:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f'{text!r} is not an http(s) URL: expected like "https://api.example.com"')
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r} has a query or fragment: put those in health_path")


def _check_origins(origins: tuple[str, ...]) -> None:
    for origin in origins:
        parts = urlsplit(origin)
        host_only = parts.netloc and origin == f"{parts.scheme}://{parts.netloc}"
        if parts.scheme not in ("http", "https") or not host_only:
            raise ValueError(
                f"{origin!r} is not an origin: expected a scheme and host only, "
                'like "https://example.com"'
            )


def _check_addresses(addresses: tuple[str, ...]) -> None:
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"{address!r} is not an IP address (like 127.0.0.1 or ::1)") from None


def _check_env_name(text: str) -> None:
    # The value is not echoed: a key pasted here by mistake must not reach a log.
    if not _ENV_NAME.fullmatch(text):
        raise ValueError(
            "expected the NAME of an environment variable (letters, digits and _), "
            "not the secret itself"
        )


def _check_header_name(text: str) -> None:
    if not _HEADER_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not an HTTP header name")


def _check_notification_url(text: str) -> None:
    # The value is not echoed: chat webhook URLs carry their secret in the path.
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            'not an http(s) URL (value not shown): expected like "https://hooks.example.com/..."'
        )


def _check_storage_url(text: str) -> None:
    # The value is not echoed: it may carry a password.
    parts = urlsplit(text)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            'not a PostgreSQL URL (value not shown): expected like "postgresql://user@host/db"'
        )


def _check_archive_dir(text: str) -> None:
    if "\0" in text:
        raise ValueError("a path cannot hold a NUL character")
    if not Path(text).is_absolute():
        raise ValueError(
            f"{text!r} is relative: expected an absolute path (instances, and verify or"
            " replay run from any directory, must all find the same segments)"
        )


def _default_degraded_latency(timeout: float) -> float:
    return (
        DEFAULT_DEGRADED_LATENCY_SECONDS
        if timeout > DEFAULT_DEGRADED_LATENCY_SECONDS
        else timeout / 2
    )


def _check_notification_headers(headers: dict[str, str]) -> None:
    _check_headers(headers, RESERVED_HEADERS)


def _check_probe_headers(headers: dict[str, str]) -> None:
    _check_headers(headers, PROBE_RESERVED_HEADERS)


def _check_headers(headers: dict[str, str], reserved: frozenset[str]) -> None:
    for name, value in headers.items():
        _check_header_name(name)
        if name.lower() in reserved:
            raise ValueError(f"{name!r} is set by cryptomon itself")
        if value.startswith(ENV_PREFIX):
            if not _ENV_NAME.fullmatch(value[len(ENV_PREFIX) :]):
                raise ValueError(
                    f"header {name!r}: expected env:NAME, NAME being an environment variable"
                )
        elif "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r}: the value has a line break")


def _check_docs_url(text: str) -> None:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f'{text!r} is not an http(s) URL: expected like "https://docs.example.com"'
        )


def _check_conditions(expressions: tuple[str, ...]) -> None:
    for index, expression in enumerate(expressions):
        _check_expression(parse_condition, expression, f"[{index}]")


def _check_observations(observations: dict[str, str]) -> None:
    for name, expression in observations.items():
        if not _OBSERVATION_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an observation name: expected letters, digits and _")
        _check_expression(parse_observation, expression, f".{name}")


def _check_expression(parse: Callable[[str], object], expression: str, where: str) -> None:
    try:
        parse(expression)
    except ConditionError as exc:
        raise _KeyedError(where, str(exc)) from None


class _KeyedError(ValueError):
    """A problem with one entry of a value: `where` extends the key (`[2]`, `.head`)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


_CHAIN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_PAIR = re.compile(r"[A-Z0-9]{1,12}-[A-Z0-9]{1,12}")


def _check_chain_name(name: str) -> None:
    if not _CHAIN_NAME.fullmatch(name):
        raise ValueError(
            "expected a chain name of lowercase letters, digits, '_' or '-' (like \"ethereum\")"
        )


def _check_pair(pair: str) -> None:
    if not _PAIR.fullmatch(pair):
        raise ValueError('expected a pair of upper-case symbols like "BTC-USD"')


def _check_chain_id(chain_id: int | str) -> None:
    if parse_uint(chain_id) is None:
        raise ValueError('expected a chain id: a number, or hexadecimal like "0x1"')


def parse_uint(value: object) -> int | None:
    """A non-negative integer (a chain id, a block number) from an int, or a decimal or
    "0x" hexadecimal string (as `eth_chainId` and `eth_blockNumber` answer); None for
    anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            number = int(text, 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            return None
        return number if number >= 0 else None
    return None


def _check_moment(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{moment.isoformat()!r} has no UTC offset: expected an ISO 8601 time with one,"
            ' like "2025-06-01T02:00:00Z"'
        )
    # Kept as Unix seconds and written back in UTC: 9999-12-31T23:00:00-02:00 is in the
    # year 10000 there, which no view of the window could write.
    try:
        datetime.fromtimestamp(moment.timestamp(), UTC)
    except (OverflowError, ValueError, OSError):
        raise ValueError(
            f"{moment.isoformat()!r} is out of range: expected a time in the years 1 to 9999 (UTC)"
        ) from None


# A recurring window's occurrence ends this long after its cron fires, at most: a window
# longer than a year is a one-off (start and end), and an end past the year 9999 could not
# be written at all.
MAX_WINDOW_DURATION_SECONDS = 366 * 86_400.0


def _check_window_duration(text: str) -> None:
    if parse_duration(text) > MAX_WINDOW_DURATION_SECONDS:
        raise ValueError(
            f"{text!r} is too long for a recurring window: expected at most 366d (set start"
            " and end for a longer one-off window)"
        )


def check_region(text: str) -> str:
    """`text` if it is a region's name; a ValueError saying what one looks like if not."""
    if not _REGION.fullmatch(text):
        raise ValueError(
            f"{text[:40]!r} is not a region name: expected 1 to 32 lower-case letters, digits"
            " or '-', starting with a letter or digit (like \"eu-west\")"
        )
    return text


_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


def _check_instance_name(text: str) -> str:
    if not _INSTANCE_NAME.fullmatch(text):
        raise ValueError(
            f"{text[:40]!r} is not an instance name: expected 1 to 100 letters, digits or"
            " '_.:-', starting with a letter or digit (like \"eu-west-1\")"
        )
    return text


def _check_regions(regions: tuple[str, ...]) -> None:
    seen: dict[str, int] = {}
    for index, region in enumerate(regions):
        try:
            check_region(region)
        except ValueError as exc:
            raise _KeyedError(f"[{index}]", str(exc)) from None
        earlier = seen.setdefault(region, index)
        if earlier != index:
            raise _KeyedError(f"[{index}]", f"duplicate region: [{earlier}] names {region!r} too")


def _check_rate_limit_source(text: str) -> None:
    if text != "unverified":
        _check_docs_url(text)


# Checks beyond the type, by key; field names mean the same in every table.
_FIELD_CHECKS: dict[str, Callable[[Any], object]] = {
    "status_interval": parse_duration,
    "heartbeat_interval": parse_duration,
    "archive_after": parse_duration,
    "snapshot_interval": parse_duration,
    "incident_retention": parse_duration,
    "interval": parse_duration,
    "timeout": parse_duration,
    "degraded_latency": parse_duration,
    "cron": _check_cron,
    "base_url": _check_base_url,
    "cors_origins": _check_origins,
    "trusted_proxies": _check_addresses,
    "api_token_env": _check_env_name,
    "read_token_env": _check_env_name,
    "api_key_env": _check_env_name,
    "api_key_header": _check_header_name,
    "url": _check_notification_url,
    "url_env": _check_env_name,
    "hmac_secret_env": _check_env_name,
    "headers": _check_notification_headers,
    "renotify_interval": parse_duration,
    "certificate_warning": parse_duration,
    "certificate_critical": parse_duration,
    "docs": _check_docs_url,
    "conditions": _check_conditions,
    "maintenance_when": _check_conditions,
    "observe": _check_observations,
    "stale_after": parse_duration,
    "max_staleness": parse_duration,
    "chain": _check_chain_name,
    "quote": _check_pair,
    "chain_id": _check_chain_id,
    "duration": parse_duration,
    "start": _check_moment,
    "end": _check_moment,
    "region": check_region,
    "regions": _check_regions,
}

# Where a name means something else in one table: (table class, key).
_TABLE_FIELD_CHECKS: dict[tuple[str, str], Callable[[Any], object]] = {
    ("StorageConfig", "url"): _check_storage_url,
    ("StorageConfig", "archive_dir"): _check_archive_dir,
    ("ProviderConfig", "headers"): _check_probe_headers,
    ("Collection", "headers"): _check_probe_headers,
    ("MaintenanceConfig", "duration"): _check_window_duration,
    ("InstanceConfig", "name"): _check_instance_name,
}

T = TypeVar("T", bound=_Table)


def _toml_type(value: object) -> str:
    names: dict[type, str] = {dict: "a table", list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _explain(error: msgspec.ValidationError, key: str, field_type: Any) -> tuple[str, str]:
    """Turn msgspec's message and `$.path` into our dotted key and a plain problem."""
    problem, _, path = str(error).partition(" - at `$")
    key += path.rstrip("`")
    if match := re.fullmatch(r"Object contains unknown field `(.+)`", problem):
        return f"{key}.{match[1]}", "unknown key"
    if match := re.fullmatch(r"Object missing required field `(.+)`", problem):
        return f"{key}.{match[1]}", "missing; this key is required"
    problem = problem.replace("`object`", "`table`")
    if get_origin(field_type) in (Union, UnionType):  # an optional key: `X | None`
        choices = [arg for arg in get_args(field_type) if arg is not type(None)]
        field_type = choices[0] if len(choices) == 1 else field_type
    if get_origin(field_type) is Literal and not path:
        problem = f"{problem}; expected one of: {', '.join(get_args(field_type))}"
    elif get_origin(field_type) is tuple and re.fullmatch(r"\[\d+\]", path.rstrip("`")):
        item = get_args(field_type)[0]  # one entry of a list of choices
        if get_origin(item) is Literal:
            problem = f"{problem}; expected any of: {', '.join(get_args(item))}"
    return key, problem


def _convert_table(
    raw: object,
    cls: type[T],
    key: str,
    problems: _Problems,
    provider: str | None = None,
    channel: str | None = None,
) -> dict[str, Any] | None:
    """Convert each key of a TOML table on its own, so every bad key is reported.

    Returns the values that converted and passed their checks, by field name,
    or None when `raw` is not a table at all.
    """
    if not isinstance(raw, dict):
        problems.add(key, f"expected a table, got {_toml_type(raw)}", provider, channel=channel)
        return None
    fields = {field.encode_name: field for field in msgspec.structs.fields(cls)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"{key}.{name}"
        field = fields.get(name)
        if field is None:
            problems.add(
                where,
                f"unknown key; expected one of: {', '.join(fields)}",
                provider,
                channel=channel,
            )
            continue
        if value is None:
            # TOML has no null; a JSON body (a window sent to the API) does, and a key sent
            # as null would otherwise pass as one left out while counting as one given.
            problems.add(where, "null is not a value: leave the key out", provider, channel=channel)
            continue
        check = _TABLE_FIELD_CHECKS.get((cls.__name__, name), _FIELD_CHECKS.get(name))
        try:
            converted = msgspec.convert(value, field.type)
            if check is not None and converted is not None:
                check(converted)
        except msgspec.ValidationError as exc:
            where, problem = _explain(exc, where, field.type)
            if check is parse_duration or check is _check_window_duration:
                problem += ' (a duration such as "30s")'
            problems.add(where, problem, provider, channel=channel)
        except _KeyedError as exc:
            problems.add(where + exc.where, str(exc), provider, channel=channel)
        except ValueError as exc:
            problems.add(where, str(exc), provider, channel=channel)
        else:
            values[field.name] = converted
    for field in fields.values():
        if field.required and field.encode_name not in raw:
            problems.add(
                f"{key}.{field.encode_name}",
                "missing; this key is required",
                provider,
                channel=channel,
            )
    return values


def _decode_table(raw: object, cls: type[T], key: str, problems: _Problems) -> T | None:
    before = len(problems.messages)
    values = _convert_table(raw, cls, key, problems)
    return cls(**values) if values is not None and len(problems.messages) == before else None


def _check_provider(
    raw: dict[str, Any], values: dict[str, Any], key: str, provider: str | None, problems: _Problems
) -> None:
    """Rules that span keys of one provider; `values` holds the keys that converted."""

    def add(field: str, problem: str) -> None:
        problems.add(f"{key}.{field}", problem, provider)

    if "interval" in raw and "cron" in raw:
        add("cron", "set interval or cron, not both")
    elif "interval" not in raw and "cron" not in raw:
        add("interval", 'missing: set interval (like "30s") or cron (like "*/5 * * * *")')
    name = values.get("name")
    if name is not None and (
        not name.strip() or "/" in name or len(name) > 100 or not name.isprintable()
    ):
        add(
            "name",
            "expected a non-empty name of at most 100 characters, without '/' or control"
            " characters (it appears in URLs and headers)",
        )
    # Compare only durations that converted; a bad one is reported already. Without a
    # degraded_latency the default follows the timeout, so only one set by hand can clash.
    if "degraded_latency" in values and "timeout" not in raw.keys() - values.keys():
        timeout = values.get("timeout", "10s")
        if parse_duration(values["degraded_latency"]) >= parse_duration(timeout):
            add("degraded_latency", f"expected less than the timeout ({timeout})")
    rate_limit = values.get("rate_limit")
    if rate_limit is not None:
        try:
            parse_duration(rate_limit.per)
        except ValueError as exc:
            add("rate_limit.per", str(exc))
        try:
            if rate_limit.source is not None:
                _check_rate_limit_source(rate_limit.source)
        except ValueError as exc:
            add("rate_limit.source", f'{exc}, or "unverified"')
    _check_regional_budget(values, add)
    if "api_key_header" in raw and "api_key_query" in raw:
        add("api_key_query", "set api_key_header or api_key_query, not both")
    placed = "api_key_header" in raw or "api_key_query" in raw
    if "api_key_env" in raw and not placed:
        add("api_key_env", "say where the key goes: set api_key_header or api_key_query")
    if placed and "api_key_env" not in raw:
        add("api_key_env", "missing: name the environment variable that holds the key")
    if "api_key_prefix" in raw and "api_key_header" not in raw:
        add("api_key_prefix", "only applies to a key sent in api_key_header")
    if values.get("api_key_optional") and "api_key_env" not in raw:
        add("api_key_optional", "only applies with api_key_env")
    _check_request(raw, add)
    observed = {
        name
        for probe in (values, *values.get("collections", ()))
        for name in (probe.get("observe", {}) if isinstance(probe, dict) else probe.observe)
    }
    if "chain" in values and "head" not in observed:
        add(
            "chain", 'its head is compared with the chain\'s: observe it, as head = "[BODY].result"'
        )
    if "quote" in values and "price" not in observed:
        add("quote", 'the price is compared with the pair\'s: observe it, as price = "[BODY].usd"')


def _check_regional_budget(values: dict[str, Any], add: Callable[[str, str], None]) -> None:
    """A provider naming its regions, each of which spends the key's requests: their
    health probes alone must fit its rate limit (collections come on top)."""
    regions, limit, interval = (
        values.get("regions"),
        values.get("rate_limit"),
        values.get("interval"),
    )
    if not regions or limit is None or interval is None:
        return
    try:
        per = limit.per_seconds
    except ValueError:
        return  # reported already
    # The most probes an interval schedule puts in one window of `per` seconds.
    each = math.ceil(per / parse_duration(interval) - 1e-9)
    total = each * len(regions)
    if total > limit.requests:
        add(
            "regions",
            f"{len(regions)} regions probing every {interval} send up to {total} requests per"
            f" {limit.per} on one key ({each} each), over rate_limit's {limit.requests}: name"
            " fewer regions, probe less often, or raise rate_limit.requests",
        )


def _check_request(raw: dict[str, Any], add: Callable[[str, str], None]) -> None:
    """Rules that span the request keys of one probe (a provider's health probe or a
    collection)."""
    if "body" in raw and "rpc" in raw:
        add("rpc", "set body or rpc, not both (rpc builds the JSON-RPC body)")
    if raw.get("method") in ("GET", "HEAD") and ("body" in raw or "rpc" in raw):
        add("method", f"a {raw['method']} request carries no body: leave method out or use POST")
    if isinstance(raw.get("rpc"), list) and not raw["rpc"]:
        add("rpc", "an empty batch: expected at least one call")


def _decode_provider(
    entry: object, key: str, problems: _Problems
) -> tuple[ProviderConfig | None, str | None]:
    """One `[[providers]]` table (or an API body) converted and checked; the provider
    (None when anything was wrong: each mistake is in `problems`) and its name, if any."""
    name = entry.get("name") if isinstance(entry, dict) else None
    provider = name if isinstance(name, str) else None
    before = len(problems.messages)
    table = dict(entry) if isinstance(entry, dict) else entry
    collections = table.pop("collections", None) if isinstance(table, dict) else None
    values = _convert_table(table, ProviderConfig, key, problems, provider)
    if values is None:
        return None, provider
    assert isinstance(entry, dict)  # _convert_table returns None otherwise
    if collections is not None:
        values["collections"] = _decode_collections(collections, key, provider, problems)
    _check_provider(entry, values, key, provider, problems)
    if len(problems.messages) != before:
        return None, provider
    return ProviderConfig(**values), provider


def _decode_providers(raw: object, problems: _Problems) -> tuple[ProviderConfig, ...]:
    if not isinstance(raw, list):
        problems.add(
            "providers", f"expected an array of tables ([[providers]]), got {_toml_type(raw)}"
        )
        return ()
    providers = []
    first_use: dict[str, int] = {}
    for index, entry in enumerate(raw):
        key = f"providers[{index}]"
        decoded, name = _decode_provider(entry, key, problems)
        if name is not None:
            # Names are compared without case: they end up in URLs and metric labels.
            earlier = first_use.setdefault(name.casefold(), index)
            if earlier != index:
                problems.add(
                    f"{key}.name",
                    f"duplicate provider name: providers[{earlier}] already uses it",
                    name,
                )
                continue
        if decoded is not None:
            providers.append(decoded)
    return tuple(providers)


def _decode_collections(
    raw: object, key: str, provider: str | None, problems: _Problems
) -> tuple[Collection, ...]:
    """Each collection converted and checked on its own, like a provider, so its
    conditions are parsed and every mistake is reported with its index."""
    if not isinstance(raw, list):
        problems.add(
            f"{key}.collections",
            f"expected an array of tables ([[providers.collections]]), got {_toml_type(raw)}",
            provider,
        )
        return ()
    collections = []
    for index, entry in enumerate(raw):
        where = f"{key}.collections[{index}]"
        before = len(problems.messages)
        values = _convert_table(entry, Collection, where, problems, provider)
        if values is None:
            continue
        assert isinstance(entry, dict)  # _convert_table returns None otherwise

        def add(field: str, problem: str, where: str = where) -> None:
            problems.add(f"{where}.{field}", problem, provider)

        _check_request(entry, add)
        if len(problems.messages) == before:
            collections.append(Collection(**values))
    return tuple(collections)


def _check_channel(
    raw: dict[str, Any],
    values: dict[str, Any],
    key: str,
    channel: str | None,
    known_providers: set[str] | None,
    problems: _Problems,
) -> None:
    """Rules that span keys of one notification channel."""

    def add(field: str, problem: str) -> None:
        problems.add(f"{key}.{field}", problem, channel=channel)

    name = values.get("name")
    if name is not None and not _CHANNEL_NAME.fullmatch(name):
        add(
            "name",
            "expected letters, digits, '_', '.' or '-' (up to 64; it appears in"
            " idempotency keys, metric labels and `notify-test NAME`)",
        )
    if "url" in raw and "url_env" in raw:
        add("url_env", "set url or url_env, not both")
    elif "url" not in raw and "url_env" not in raw:
        add("url", "missing: set url, or url_env naming the variable that holds it")
    kind = values.get("kind")
    if kind == "telegram" and "chat_id" not in raw:
        add("chat_id", "missing: a telegram channel needs the chat to send to")
    if kind is not None and kind != "telegram" and "chat_id" in raw:
        add("chat_id", 'only applies to kind = "telegram"')
    if kind is not None and kind != "webhook" and "hmac_secret_env" in raw:
        add("hmac_secret_env", 'only applies to kind = "webhook" (a generic JSON webhook)')
    events = values.get("events")
    if events is not None and not events:
        add("events", f"expected at least one of: {', '.join(NOTIFY_EVENTS)}")
    if "renotify_interval" in raw and events is not None and "raised" not in events:
        add("renotify_interval", 're-notification repeats raised alerts: add "raised" to events')
    if known_providers is not None:
        for provider in values.get("providers", ()):
            if provider.casefold() not in known_providers:
                add("providers", f"{provider!r} is not a configured provider")


def _provider_names(
    raw: object, default_providers: Callable[[], tuple[ProviderConfig, ...]]
) -> set[str] | None:
    """The provider names a channel may filter on, case-folded; None when unknown."""
    if raw is None:
        return {provider.name.casefold() for provider in default_providers()}
    if not isinstance(raw, list):
        return None
    return {
        entry["name"].casefold()
        for entry in raw
        if isinstance(entry, dict) and isinstance(entry.get("name"), str)
    }


def _decode_notifications(
    raw: object, known_providers: set[str] | None, problems: _Problems
) -> tuple[NotificationChannel, ...]:
    if not isinstance(raw, list):
        problems.add(
            "notifications",
            f"expected an array of tables ([[notifications]]), got {_toml_type(raw)}",
        )
        return ()
    channels = []
    first_use: dict[str, int] = {}
    for index, entry in enumerate(raw):
        key = f"notifications[{index}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        channel = name if isinstance(name, str) else None
        before = len(problems.messages)
        values = _convert_table(entry, NotificationChannel, key, problems, channel=channel)
        if values is None:
            continue
        _check_channel(entry, values, key, channel, known_providers, problems)
        if channel is not None:
            earlier = first_use.setdefault(channel.casefold(), index)
            if earlier != index:
                problems.add(
                    f"{key}.name",
                    f"duplicate channel name: notifications[{earlier}] already uses it",
                    channel=channel,
                )
        if len(problems.messages) == before:
            channels.append(NotificationChannel(**values))
    return tuple(channels)


def _decode_chains(raw: object, problems: _Problems) -> dict[str, ChainConfig]:
    if not isinstance(raw, dict):
        problems.add(
            "chains", f"expected a table of chains ([chains.ethereum]), got {_toml_type(raw)}"
        )
        return {}
    chains = {}
    for name, entry in raw.items():
        try:
            _check_chain_name(name)
        except ValueError as exc:
            problems.add(f"chains.{name}", str(exc))
            continue
        chain = _decode_table(entry, ChainConfig, f"chains.{name}", problems)
        if chain is not None:
            chains[name] = chain
    return chains


def check_maintenance(
    raw: object,
    key: str,
    problems: _Problems,
    known_providers: set[str] | None = None,
) -> MaintenanceConfig | None:
    """One maintenance window's table checked: each key, then the rules across keys;
    None when anything was wrong (each mistake is in `problems`)."""
    before = len(problems.messages)
    values = _convert_table(raw, MaintenanceConfig, key, problems)
    if values is None:
        return None
    assert isinstance(raw, dict)  # _convert_table returns None otherwise

    def add(field: str, problem: str) -> None:
        problems.add(f"{key}.{field}" if key else field, problem)

    name = values.get("name")
    if name is not None and (not name.strip() or "/" in name or len(name) > 100):
        add("name", "expected a non-empty name without '/', at most 100 characters")
    recurring = "cron" in raw or "duration" in raw
    one_off = "start" in raw or "end" in raw
    if recurring and one_off:
        add("start", "set cron and duration (recurring) or start and end (one-off), not both")
    elif recurring:
        for field in ("cron", "duration"):
            if field not in raw:
                add(field, "missing: a recurring window needs both cron and duration")
    elif one_off:
        for field in ("start", "end"):
            if field not in raw:
                add(field, "missing: a one-off window needs both start and end")
        start, end = values.get("start"), values.get("end")
        if start is not None and end is not None and end <= start:
            add("end", f"expected after start ({start.isoformat()})")
    else:
        add("cron", "missing: set cron and duration (recurring) or start and end (one-off)")
    if not raw.get("providers") and not raw.get("categories"):
        add("providers", "missing: name the providers or the categories it covers")
    if known_providers is not None:
        for provider in values.get("providers", ()):
            if provider.casefold() not in known_providers:
                add("providers", f"{provider!r} is not a configured provider")
    if len(problems.messages) != before:
        return None
    return MaintenanceConfig(**values)


def _decode_maintenance(
    raw: object, known_providers: set[str] | None, problems: _Problems
) -> tuple[MaintenanceConfig, ...]:
    if not isinstance(raw, list):
        problems.add(
            "maintenance",
            f"expected an array of tables ([[maintenance]]), got {_toml_type(raw)}",
        )
        return ()
    windows = []
    first_use: dict[str, int] = {}
    for index, entry in enumerate(raw):
        key = f"maintenance[{index}]"
        window = check_maintenance(entry, key, problems, known_providers)
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str):
            earlier = first_use.setdefault(name, index)
            if earlier != index:
                problems.add(
                    f"{key}.name", f"duplicate window name: maintenance[{earlier}] already uses it"
                )
                continue
        if window is not None:
            windows.append(window)
    return tuple(windows)


def check_maintenance_body(raw: object, known_providers: set[str]) -> MaintenanceConfig:
    """A window sent to the API, checked as the file's are; raises `BodyError` naming the
    first key that was wrong."""
    problems = _Problems("")
    window = check_maintenance(raw, "", problems, known_providers)
    if window is None:
        raise _first_error(problems)
    return window


# Header names whose literal values are secrets (an Authorization header, an X-API-Key):
# the API takes them only as "env:NAME".
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|session|signature|passw", re.I)
# Query parameter and JSON body key names that hold a secret (apikey, api_key, accessToken,
# password...), compared in snake case. Narrower than for headers: `token` alone is as
# often a token's address as a credential, and a `public_key` is no secret.
_SECRET_KEY = re.compile(
    r"(?:.*_)?(?:api_?key|key|access_key|secret(?:_key)?|private_key|password|passwd"
    r"|passphrase|auth|authorization|signature|(?:access|auth|api|bearer|refresh|session)_token)"
)
_NOT_SECRET_KEYS = frozenset({"public_key", "pub_key", "pubkey"})


def _secret_key(name: str) -> bool:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).replace("-", "_").lower()
    return snake not in _NOT_SECRET_KEYS and _SECRET_KEY.fullmatch(snake) is not None


def check_provider_body(raw: object) -> ProviderConfig:
    """A provider sent to the API (the keys of a `[[providers]]` table, as JSON), checked
    as the file's are, and refused if it carries a secret: a request body is no place for
    one, since the definition is recorded in the log. Raises `BodyError` naming the first
    key that was wrong."""
    problems = _Problems("")
    if isinstance(raw, dict):
        _check_no_secrets(raw, problems)
    provider, _ = _decode_provider(raw, "", problems)
    if provider is None or problems.found:
        raise _first_error(problems)
    return provider


def _check_no_secrets(raw: dict[str, Any], problems: _Problems) -> None:
    """Refuse what looks like a secret: a key, a literal secret header, credentials or a
    key in a URL, a key in the JSON (or JSON-RPC) body sent. A key in a URL's path cannot
    be told from the path; a provider that needs one there is for the config file."""
    for field in ("api_key", "key", "token", "secret", "password"):
        if field in raw:
            problems.add(
                field,
                "a key is never accepted in a request body: set api_key_env to the name of"
                " the environment variable that holds it, as in the config file",
            )
    base_url = raw.get("base_url")
    if isinstance(base_url, str) and (urlsplit(base_url).username is not None):
        problems.add("base_url", "credentials in the URL are a secret: use api_key_env instead")
    probes = [("", raw)]
    collections = raw.get("collections")
    if isinstance(collections, list):
        probes += [(f"collections[{i}].", c) for i, c in enumerate(collections)]
    for where, probe in probes:
        if not isinstance(probe, dict):
            continue
        headers = probe.get("headers")
        if isinstance(headers, dict):
            for name, value in headers.items():
                if (
                    isinstance(value, str)
                    and not value.startswith(ENV_PREFIX)
                    and _SECRET_HEADER.search(name)
                ):
                    problems.add(
                        f"{where}headers.{name}",
                        "a secret header value is never accepted in a request body: write"
                        ' "env:NAME", naming the environment variable that holds it',
                    )
        for field in ("base_url", "health_path", "path"):
            text = probe.get(field)
            if not isinstance(text, str):
                continue
            for pair in urlsplit(text).query.split("&"):
                name, _, value = pair.partition("=")
                if value and _secret_key(name):
                    problems.add(
                        f"{where}{field}",
                        f"the query parameter {name!r} looks like a key: a secret is never"
                        " accepted in a request body; use api_key_env with api_key_query",
                    )
        for field in ("body", "rpc"):
            found = _secret_in_json(probe.get(field))
            if found is not None:
                problems.add(
                    f"{where}{field}",
                    f"{found!r} looks like a key: a secret is never accepted in a request body"
                    " (the body sent is recorded); use api_key_env with api_key_header or"
                    " api_key_query",
                )


def _secret_in_json(value: object) -> str | None:
    """The first key of a JSON value's objects, at any depth, that names a secret and holds
    a non-empty string."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _secret_key(key) and isinstance(item, str) and item:
                return key
            found = _secret_in_json(item)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _secret_in_json(item)
            if found is not None:
                return found
    return None


def _first_error(problems: _Problems) -> BodyError:
    field, problem = problems.found[0]
    return BodyError(field.lstrip(".") or "body", problem)


class BodyError(ValueError):
    """A body given to the API that is wrong: which key and why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# Also said when --db names a PostgreSQL log the file did not (http.settings).
ARCHIVE_DIR_NEEDED = (
    "archive_after on PostgreSQL writes its segments to storage.archive_dir: set it to an"
    " absolute path that every instance can write (a shared directory)"
)


def _check_storage(sections: dict[str, Any], problems: _Problems) -> None:
    """A log on PostgreSQL has no file to put archive segments beside."""
    storage = sections.get("storage")
    if not isinstance(storage, StorageConfig) or storage.url is None:
        return
    if storage.archive_after is not None and storage.archive_dir is None:
        problems.add("storage.archive_dir", ARCHIVE_DIR_NEEDED)


def _decode_status_page(
    raw: object, known_providers: set[str] | None, problems: _Problems
) -> StatusPageConfig | None:
    before = len(problems.messages)
    values = _convert_table(raw, StatusPageConfig, "status_page", problems)
    if values is None:
        return None
    named = [("status_page.providers", values.get("providers", ()))]
    named += [
        (f"status_page.groups[{i}].providers", group.providers)
        for i, group in enumerate(values.get("groups", ()))
    ]
    for key, providers in named:
        for provider in providers:
            if known_providers is not None and provider.casefold() not in known_providers:
                problems.add(key, f"{provider!r} is not a configured provider")
    return StatusPageConfig(**values) if len(problems.messages) == before else None


def _parse(
    text: str, source: str, default_providers: Callable[[], tuple[ProviderConfig, ...]]
) -> Config:
    problems = _Problems(source)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: invalid TOML: {exc}"]) from None
    sections: dict[str, Any] = {}
    tables: dict[str, type[_Table]] = {
        "server": ServerConfig,
        "instance": InstanceConfig,
        "storage": StorageConfig,
        "websocket": WebSocketConfig,
        "monitoring": MonitoringConfig,
    }
    for name, value in document.items():
        if name == "providers":
            sections[name] = _decode_providers(value, problems)
        elif name == "notifications":
            known = _provider_names(document.get("providers"), default_providers)
            sections[name] = _decode_notifications(value, known, problems)
        elif name == "chains":
            sections[name] = _decode_chains(value, problems)
        elif name == "quotes":
            sections[name] = _decode_table(value, QuotesConfig, name, problems)
        elif name == "maintenance":
            known = _provider_names(document.get("providers"), default_providers)
            sections[name] = _decode_maintenance(value, known, problems)
        elif name == "status_page":
            known = _provider_names(document.get("providers"), default_providers)
            sections[name] = _decode_status_page(value, known, problems)
        elif name in tables:
            sections[name] = _decode_table(value, tables[name], name, problems)
        else:
            expected = ", ".join(
                [
                    *tables,
                    *("providers", "notifications", "chains", "quotes", "maintenance"),
                    "status_page",
                ]
            )
            problems.add(name, f"unknown key; expected one of: {expected}")
    _check_storage(sections, problems)
    monitoring = sections.get("monitoring")
    if (
        isinstance(monitoring, MonitoringConfig)
        and monitoring.certificate_critical_seconds >= monitoring.certificate_warning_seconds
    ):
        problems.add(
            "monitoring.certificate_critical",
            f"expected less than certificate_warning ({monitoring.certificate_warning})",
        )
    if problems.messages:
        raise ConfigError(problems.messages)
    if "providers" not in sections:
        sections["providers"] = default_providers()
        sections["providers_source"] = "catalogue"
    return Config(**sections, source=source)

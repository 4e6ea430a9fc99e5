"""Configuration: a TOML file, overridden by environment variables, overridden by options.

Every key has a default, a type and a section; an unknown key or a value of the wrong type is a
`ConfigError` that names the key (`api.concurrency must be an integer, got 'eight'`). The API key
is never a configuration value: it comes only from `GPUCOST_API_KEY` or the file named by
`api.api_key_file` / `--api-key-file`, so it never shows in `ps` or in a config file someone
commits.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import ConfigError
from pipeline.log import get_logger
from pipeline.redact import register_secret

DEFAULT_CONFIG_FILE = "gpucost.toml"
DEFAULT_DB = "gpucost.duckdb"


@dataclass(frozen=True)
class ApiSettings:
    """How to reach the provider."""

    url: str | None = None
    api_key_file: str | None = None
    allow_insecure_http: bool = False
    page_size: int = 100
    concurrency: int = 8
    timeout_seconds: float = 30.0
    max_response_bytes: int = 64 * 1024 * 1024
    retry_max_seconds: float = 300.0
    include_logs: bool = False
    # Every night ends (docs/operations.md, "Bounded nights"): the snapshot's time limit, and
    # the circuit breaker (this many failed requests in a row, over at least these seconds).
    run_deadline_seconds: float = 3600.0
    breaker_failures: int = 20
    breaker_seconds: float = 60.0
    # Worker processes that process the details of a large fetch off the client's GIL
    # (docs/operations.md, "Memory and CPU"); 0: none. Default: 1 with two CPUs or more.
    parse_processes: int | None = None


@dataclass(frozen=True)
class StoreSettings:
    """Where the snapshots are kept."""

    db: str = DEFAULT_DB
    raw_retention_days: int = 30
    # DuckDB's memory limit during the snapshot, in MB (docs/operations.md, "Memory and CPU").
    snapshot_memory_mb: int = 192


@dataclass(frozen=True)
class Thresholds:
    """The definitions' thresholds (DESIGN.md, "Definitions"); passed to SQL as parameters."""

    idle_threshold_pct: float = 5.0
    memory_held_gb: float = 1.0
    stop_idle_share_pct: float = 95.0
    stop_idle_min_buckets: int = 24
    downsize_percentile: float = 95.0
    schedule_min_idle_hours: int = 8
    schedule_min_days: int = 5
    drift_flag_pct: float = 15.0
    drift_flag_min_abs: float = 1.0
    drift_min_coverage_pct: float = 95.0
    mape_days: int = 14
    hours_per_month: int = 720
    # days of stored history a recommendation is evaluated over (7, 14 or 30)
    lookback_days: int = 7
    # finance: spend anomalies (marts.spend_anomalies)
    anomaly_baseline_days: int = 14
    anomaly_min_cost: float = 25.0
    anomaly_mad_factor: float = 3.0
    anomaly_min_pct: float = 20.0


@dataclass(frozen=True)
class ReportSettings:
    """Where and how reports are written."""

    out_dir: str = "reports/out"
    # FOCUS: also write each billing period's file as Parquet (typed columns) beside its CSV
    focus_parquet: bool = False


@dataclass(frozen=True)
class LogSettings:
    """How the CLI talks: `text` for people, `json` for log shippers."""

    format: str = "text"


EVENT_TYPES = (
    "recommendation_opened",
    "recommendation_resolved",
    "budget_threshold",
    "spend_anomaly",
    "run_health",
)
CHANNEL_KINDS = ("webhook", "slack", "email")
REC_KINDS = ("stop_idle", "downsize", "schedule", "delete_storage", "investigate_error")


@dataclass(frozen=True)
class ChannelSettings:
    """One `[[notify.channels]]` entry: where messages go and which events reach it.

    Routing: `events` (default: every type) and `projects` (default: every project; a project
    id or name) filter what the channel receives; an event about no project (run_health, a
    fleet or cost-centre budget) passes a `projects` filter only when `projects` is empty.
    """

    name: str
    kind: str  # webhook | slack | email
    events: tuple[str, ...] = EVENT_TYPES
    projects: tuple[str, ...] = ()
    timeout_seconds: float = 10.0
    # webhook / slack
    url: str | None = None
    secret_file: str | None = None
    # email
    smtp_host: str | None = None
    smtp_port: int = 587
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None  # a private CA for the SMTP server's certificate
    from_addr: str | None = None
    to: tuple[str, ...] = ("owner",)  # "owner": each project's owner e-mail

    @property
    def to_owner(self) -> bool:
        """True when each event goes to its project's owner rather than to fixed addresses."""
        return self.to == ("owner",)


@dataclass(frozen=True)
class NotifySettings:
    """`[notify]`: the savings an opened recommendation must reach, and the channels."""

    min_monthly_savings: float = 100.0
    channels: tuple[ChannelSettings, ...] = ()


@dataclass(frozen=True)
class Suppression:
    """One `[[suppress]]` entry: recommendations of a cluster, project and/or kind not shown
    as open, nor announced, until `until` (exclusive; None: for good)."""

    reason: str
    cluster: str | None = None
    project: str | None = None
    kind: str | None = None
    until: date | None = None


_CHANNEL_KEYS: dict[str, str] = {
    "name": "str",
    "kind": "str",
    "events": "list",
    "projects": "list",
    "timeout_seconds": "float",
    "url": "str",
    "secret_file": "str",
    "smtp_host": "str",
    "smtp_port": "int",
    "starttls": "bool",
    "ssl": "bool",
    "username": "str",
    "password_file": "str",
    "ca_file": "str",
    "from": "str",
    "to": "str_or_list",
}


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of strings, got {value!r}")
    return tuple(value)


def _url(key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key} must be an http(s) URL, got {value!r}")
    if parts.scheme == "http" and not is_loopback_url(value):
        raise ConfigError(f"{key} is plain http to a remote host; use https")
    return value


def _channel(index: int, values: Any, seen: set[str]) -> ChannelSettings:
    where = f"notify.channels[{index}]"
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a table of keys, got {values!r}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _CHANNEL_KEYS:
            hint = ", ".join(sorted(_CHANNEL_KEYS))
            raise ConfigError(f"unknown configuration key {where}.{key} (known: {hint})")
        kind = _CHANNEL_KEYS[key]
        if kind == "list":
            out[key] = _str_list(f"{where}.{key}", value)
        elif kind == "str_or_list":
            out[key] = (value,) if isinstance(value, str) else _str_list(f"{where}.{key}", value)
        else:
            out[key] = _coerce(f"{where}.{key}", value, kind)
    for key in ("name", "kind"):
        if not out.get(key):
            raise ConfigError(f"{where}.{key} is required")
    name = out["name"]
    if name in seen:
        raise ConfigError(f"{where}.name {name!r} is used by another channel")
    seen.add(name)
    kind = out["kind"]
    if kind not in CHANNEL_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(CHANNEL_KINDS)}, got {kind!r}")
    for event in out.get("events", ()):
        if event not in EVENT_TYPES:
            raise ConfigError(
                f"{where}.events: unknown event {event!r} (known: {', '.join(EVENT_TYPES)})"
            )
    if out.get("timeout_seconds", 1.0) <= 0:
        raise ConfigError(f"{where}.timeout_seconds must be positive")
    if kind in ("webhook", "slack"):
        if not out.get("url"):
            raise ConfigError(f"{where}.url is required for a {kind} channel")
        out["url"] = _url(f"{where}.url", out["url"])
        for key in (
            "smtp_host",
            "smtp_port",
            "starttls",
            "ssl",
            "username",
            "password_file",
            "ca_file",
            "from",
            "to",
        ):
            if key in out:
                raise ConfigError(f"{where}.{key} is for email channels, not {kind}")
    if kind == "slack" and "secret_file" in out:
        raise ConfigError(f"{where}.secret_file is for webhook channels (Slack signs nothing)")
    if kind == "email":
        for key in ("smtp_host", "from"):
            if not out.get(key):
                raise ConfigError(f"{where}.{key} is required for an email channel")
        for key in ("url", "secret_file"):
            if key in out:
                raise ConfigError(f"{where}.{key} is for webhook channels, not email")
        if ("username" in out) != ("password_file" in out):
            raise ConfigError(f"{where}.username and password_file go together")
        if not 0 < out.get("smtp_port", 587) < 65536:
            raise ConfigError(f"{where}.smtp_port must be a port number")
        if out.get("ssl") and out.get("starttls"):
            raise ConfigError(f"{where}: ssl and starttls exclude each other")
        if out.get("ssl"):
            out.setdefault("starttls", False)
        to = out.get("to", ("owner",))
        if "owner" in to and len(to) > 1:
            raise ConfigError(f'{where}.to is either "owner" or a list of addresses')
        if "owner" not in to and not all("@" in addr for addr in to):
            raise ConfigError(f"{where}.to must hold e-mail addresses, got {list(to)!r}")
    if "from" in out:
        out["from_addr"] = out.pop("from")
    return ChannelSettings(**out)


def parse_notify(values: Any) -> NotifySettings:
    """`[notify]` and its `[[notify.channels]]`, every key checked (errors name the key)."""
    if values is None:
        return NotifySettings()
    if not isinstance(values, Mapping):
        raise ConfigError(f"[notify] must be a table of keys, got {values!r}")
    settings = NotifySettings()
    for key, value in values.items():
        if key == "min_monthly_savings":
            amount = _coerce("notify.min_monthly_savings", value, "float")
            if amount < 0:
                raise ConfigError("notify.min_monthly_savings must be at least 0")
            settings = dataclasses.replace(settings, min_monthly_savings=amount)
        elif key == "channels":
            if not isinstance(value, list):
                raise ConfigError("notify.channels must be an array of tables [[notify.channels]]")
            seen: set[str] = set()
            channels = tuple(_channel(i, v, seen) for i, v in enumerate(value))
            settings = dataclasses.replace(settings, channels=channels)
        else:
            raise ConfigError(
                f"unknown configuration key notify.{key} (known in [notify]: channels, "
                "min_monthly_savings)"
            )
    return settings


def parse_suppressions(values: Any) -> tuple[Suppression, ...]:
    """The `[[suppress]]` entries: at least one of cluster / project / kind, and a reason."""
    if values is None:
        return ()
    if not isinstance(values, list):
        raise ConfigError("suppress must be an array of tables [[suppress]]")
    out = []
    for index, entry in enumerate(values):
        where = f"suppress[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a table of keys, got {entry!r}")
        known = ("cluster", "project", "kind", "reason", "until")
        for key, value in entry.items():
            if key not in known:
                raise ConfigError(
                    f"unknown configuration key {where}.{key} (known: {', '.join(known)})"
                )
            if key == "until":
                if isinstance(value, datetime) or not isinstance(value, date):
                    raise ConfigError(f"{where}.until must be a date (until = 2026-12-31)")
            elif not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}.{key} must be a non-empty string, got {value!r}")
        if not any(entry.get(k) for k in ("cluster", "project", "kind")):
            raise ConfigError(f"{where} must name a cluster, a project or a kind")
        if not entry.get("reason"):
            raise ConfigError(f"{where}.reason is required: say why, for the next reader")
        if entry.get("kind") and entry["kind"] not in REC_KINDS:
            raise ConfigError(
                f"{where}.kind must be one of {', '.join(REC_KINDS)}, got {entry['kind']!r}"
            )
        out.append(Suppression(**dict(entry)))
    return tuple(out)


# The cost center of a project that `[cost_centers]` does not map (marts.project_monthly);
# reserved: no configured cost center may be called so.
UNMAPPED_COST_CENTER = "unmapped"
BUDGET_SCOPES = ("fleet", "project", "cost_center")


@dataclass(frozen=True)
class Budget:
    """One `[[budgets]]` entry: a monthly amount for the fleet, a project or a cost center."""

    name: str
    scope: str  # fleet | project | cost_center
    scope_id: str | None  # the project_id or cost center; None for the fleet
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class Config:
    """The whole configuration, one frozen value passed to every stage."""

    api: ApiSettings = field(default_factory=ApiSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    report: ReportSettings = field(default_factory=ReportSettings)
    log: LogSettings = field(default_factory=LogSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    suppress: tuple[Suppression, ...] = ()
    # finance: project_id -> cost center, and the budgets
    cost_centers: Mapping[str, str] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()

    def api_key(self) -> str | None:
        """The API key from `GPUCOST_API_KEY`, else from `api.api_key_file`; never logged."""
        return read_api_key(self.api.api_key_file)


_SECTIONS: dict[str, type] = {
    "api": ApiSettings,
    "store": StoreSettings,
    "thresholds": Thresholds,
    "report": ReportSettings,
    "log": LogSettings,
}

_CHOICES: dict[str, tuple[Any, ...]] = {
    "log.format": ("text", "json"),
    "thresholds.lookback_days": (7, 14, 30),
}

# (key, minimum) for numbers that make no sense below a bound. Every threshold has one: a
# negative threshold (or a NaN, refused for every number) silently changes what is counted.
_MINIMUMS: dict[str, float] = {
    "api.page_size": 1,
    "api.concurrency": 1,
    "api.timeout_seconds": 0.001,
    "api.max_response_bytes": 1024,
    "api.retry_max_seconds": 0,
    "api.run_deadline_seconds": 1,
    "api.breaker_failures": 1,
    "api.breaker_seconds": 0,
    "api.parse_processes": 0,
    "store.raw_retention_days": 0,
    "store.snapshot_memory_mb": 128,
    "thresholds.idle_threshold_pct": 0,
    "thresholds.memory_held_gb": 0,
    "thresholds.stop_idle_share_pct": 0,
    "thresholds.stop_idle_min_buckets": 1,
    "thresholds.downsize_percentile": 0,
    "thresholds.schedule_min_idle_hours": 1,
    "thresholds.schedule_min_days": 1,
    "thresholds.drift_flag_pct": 0,
    "thresholds.drift_flag_min_abs": 0,
    "thresholds.drift_min_coverage_pct": 0,
    "thresholds.mape_days": 1,
    "thresholds.hours_per_month": 1,
    "thresholds.anomaly_baseline_days": 2,
    "thresholds.anomaly_min_cost": 0,
    "thresholds.anomaly_mad_factor": 0,
    "thresholds.anomaly_min_pct": 0,
}
# Percentages of a whole are at most 100; `drift_flag_pct` is not one (a drift can be 300 %),
# and counts of days and hours stop at what a week, a day, a year holds.
_MAXIMUMS: dict[str, float] = {
    "api.page_size": 100,
    "api.parse_processes": 16,
    "thresholds.idle_threshold_pct": 100,
    "thresholds.stop_idle_share_pct": 100,
    "thresholds.downsize_percentile": 100,
    "thresholds.drift_min_coverage_pct": 100,
    "thresholds.schedule_min_days": 7,
    "thresholds.schedule_min_idle_hours": 24,
    "thresholds.mape_days": 366,
    "thresholds.hours_per_month": 744,
    "thresholds.stop_idle_min_buckets": 10_000,
}


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """Check one value against its field's annotation; ints are accepted where floats are."""
    if value is None:
        if "None" in annotation:
            return None
        raise ConfigError(f"{key} must not be empty")
    base = annotation.replace(" | None", "")
    ok: bool
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
    elif base == "str":
        ok = isinstance(value, str)
    else:  # pragma: no cover - a field type this loader does not know is a programming error
        raise TypeError(f"unsupported config type {annotation} for {key}")
    if not ok:
        article = "an" if base[0] in "aeiou" else "a"
        names = {
            "bool": "boolean (true or false)",
            "int": "integer",
            "float": "number",
            "str": "string",
        }
        raise ConfigError(f"{key} must be {article} {names[base]}, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        choices = ", ".join(str(choice) for choice in _CHOICES[key])
        raise ConfigError(f"{key} must be one of {choices}, got {value!r}")
    if key in _MINIMUMS and value < _MINIMUMS[key]:
        raise ConfigError(f"{key} must be at least {_MINIMUMS[key]:g}, got {value!r}")
    if key in _MAXIMUMS and value > _MAXIMUMS[key]:
        raise ConfigError(f"{key} must be at most {_MAXIMUMS[key]:g}, got {value!r}")
    return value


def _section(name: str, cls: type, values: Mapping[str, Any], base: Any) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            hint = ", ".join(sorted(known))
            raise ConfigError(f"unknown configuration key {name}.{key} (known in [{name}]: {hint})")
        changes[key] = _coerce(f"{name}.{key}", value, str(known[key].type))
    return dataclasses.replace(base, **changes)


def merge(config: Config, overrides: Mapping[str, Mapping[str, Any]]) -> Config:
    """Return `config` with `{section: {key: value}}` applied, every key and type checked."""
    changes = {}
    for name, values in overrides.items():
        if name not in _SECTIONS:
            raise ConfigError(
                f"unknown configuration section [{name}] (known: {', '.join(_SECTIONS)})"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{name}] must be a table of keys, got {values!r}")
        changes[name] = _section(name, _SECTIONS[name], values, getattr(config, name))
    return dataclasses.replace(config, **changes)


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if env.get("GPUCOST_DB"):
        out.setdefault("store", {})["db"] = env["GPUCOST_DB"]
    if env.get("GPUCOST_API_URL"):
        out.setdefault("api", {})["url"] = env["GPUCOST_API_URL"]
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load the configuration: defaults < TOML file < environment < `overrides` (options).

    `path` None means `./gpucost.toml` when it exists. A named file that does not exist, TOML
    that does not parse, an unknown key or a wrong type raises `ConfigError`.
    """
    env = os.environ if env is None else env
    config = Config()
    file: Path | None
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"configuration file {file} does not exist")
    else:
        file = Path(DEFAULT_CONFIG_FILE)
        file = file if file.is_file() else None
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"configuration file {file} cannot be read: {exc}") from None
        if "api_key" in data.get("api", {}):
            raise ConfigError(
                "api.api_key is not accepted in a configuration file: set GPUCOST_API_KEY "
                "or api.api_key_file"
            )
        notify, suppress = data.pop("notify", None), data.pop("suppress", None)
        finance = {key: data.pop(key) for key in ("cost_centers", "budgets") if key in data}
        config = merge(config, data)
        config = dataclasses.replace(
            config,
            notify=parse_notify(notify),
            suppress=parse_suppressions(suppress),
            cost_centers=parse_cost_centers(finance.get("cost_centers", {})),
            budgets=parse_budgets(finance.get("budgets", [])),
        )
    config = merge(config, _env_overrides(env))
    if overrides:
        config = merge(config, {k: v for k, v in overrides.items() if v})
    return config


_CURRENCY = re.compile(r"^[A-Z]{3}$")
_BUDGET_KEYS = ("name", "project_id", "cost_center", "monthly", "currency")


def parse_cost_centers(table: Any) -> dict[str, str]:
    """`[cost_centers]` (project_id = "cost center") checked: non-empty strings, none reserved."""
    if not isinstance(table, Mapping):
        raise ConfigError(
            f'[cost_centers] must be a table of project_id = "cost center", got {table!r}'
        )
    out: dict[str, str] = {}
    for project_id, center in table.items():
        key = f"cost_centers.{project_id}"
        if not isinstance(center, str) or not center.strip():
            raise ConfigError(f"{key} must be a non-empty string, got {center!r}")
        if center == UNMAPPED_COST_CENTER:
            raise ConfigError(
                f"{key}: {UNMAPPED_COST_CENTER!r} is reserved for projects without a cost center"
            )
        out[str(project_id)] = center
    return out


def _budget_amount(key: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key} must be a positive number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a positive finite number, got {value!r}")
    try:
        # repr of a TOML float is its shortest decimal form: 3000.1 stays 3000.1
        amount = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise ConfigError(f"{key} must be a positive number, got {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigError(f"{key} must be a positive finite number, got {value!r}")
    if amount >= Decimal(10) ** 12:
        raise ConfigError(f"{key} must be below 10^12, got {value!r}")
    return amount


def parse_budgets(entries: Any) -> tuple[Budget, ...]:
    """`[[budgets]]` checked: a unique name, at most one of project_id / cost_center (neither:
    the whole fleet), `monthly` a positive finite amount, `currency` an ISO 4217 code."""
    if not isinstance(entries, list):
        raise ConfigError(f"budgets must be an array of tables ([[budgets]]), got {entries!r}")
    out: list[Budget] = []
    names: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"budgets[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a table, got {entry!r}")
        for key in entry:
            if key not in _BUDGET_KEYS:
                raise ConfigError(
                    f"unknown configuration key {where}.{key} (known: {', '.join(_BUDGET_KEYS)})"
                )
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name must be a non-empty string, got {name!r}")
        if name in names:
            raise ConfigError(f"{where}.name {name!r} is used by another budget")
        names.add(name)
        project_id, center = entry.get("project_id"), entry.get("cost_center")
        if project_id is not None and center is not None:
            raise ConfigError(
                f"{where}: set project_id or cost_center, not both (neither: the whole fleet)"
            )
        for key, value in (("project_id", project_id), ("cost_center", center)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{where}.{key} must be a non-empty string, got {value!r}")
        if "monthly" not in entry:
            raise ConfigError(f"{where}.monthly is required (the monthly amount)")
        amount = _budget_amount(f"{where}.monthly", entry["monthly"])
        currency = entry.get("currency")
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            raise ConfigError(
                f'{where}.currency must be an ISO 4217 code such as "USD", got {currency!r}'
            )
        scope, scope_id = (
            ("project", project_id)
            if project_id is not None
            else ("cost_center", center)
            if center is not None
            else ("fleet", None)
        )
        out.append(Budget(name, scope, scope_id, amount, currency))
    return tuple(out)


def read_api_key(key_file: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The API key: `GPUCOST_API_KEY` wins, else the first line of `key_file`, else None.

    The key is registered with `pipeline.redact` as soon as it is read, so that nothing gpucost
    writes or prints afterwards can carry it, even when the provider echoes it back. A key file
    that group or others can read is used with a warning (as ssh warns); one that is not UTF-8
    text is a `ConfigError`.
    """
    env = os.environ if env is None else env
    if env.get("GPUCOST_API_KEY"):
        key = env["GPUCOST_API_KEY"].strip()
        register_secret(key)
        return key
    if not key_file:
        return None
    path = Path(key_file)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"api key file {key_file} cannot be read: {exc.strerror}") from None
    try:
        lines = data.decode("utf-8").strip().splitlines()
    except UnicodeDecodeError:
        raise ConfigError(
            f"api key file {key_file} is not UTF-8 text (is it the right file?)"
        ) from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"api key file {key_file} is empty")
    key = lines[0].strip()
    register_secret(key)
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and key_file not in _WARNED_KEY_FILES:
        _WARNED_KEY_FILES.add(key_file)
        get_logger("config").warning(
            "warning: api key file %s is accessible by others (mode %03o); run chmod 600 %s",
            key_file,
            stat.S_IMODE(mode),
            key_file,
        )
    return key


_WARNED_KEY_FILES: set[str] = set()


def is_loopback_url(url: str) -> bool:
    """True when `url` points at this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str | None, *, allow_insecure_http: bool = False) -> str:
    """Validate the base URL: https, or http only to loopback unless explicitly allowed."""
    if not url:
        raise ConfigError("no API URL: set api.url, GPUCOST_API_URL or --api-url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"api.url must be an http(s) URL, got {url!r}")
    if parts.username or parts.password:
        raise ConfigError("api.url must not carry credentials; use GPUCOST_API_KEY")
    if parts.scheme == "http" and not is_loopback_url(url) and not allow_insecure_http:
        raise ConfigError(
            f"api.url {url} is plain http to a remote host; use https, or set "
            "api.allow_insecure_http = true if you really mean it"
        )
    return url.rstrip("/")

-- gpucost store, schema version 1.
-- Schema `meta`: the runs ledger and what failed. Schema `snap`: the normalized snapshot tables
-- that sql/staging reads. Every row carries the run_id that wrote it. Money is DECIMAL(18, 6)
-- in the row's currency; timestamps are TIMESTAMPTZ in UTC.
-- A snapshot is identified by (cluster_id, snapshot_at): snapshot_at is the snapshot instant
-- (metrics.current.timestamp, else updated_at), i.e. data time, never the local clock.

create schema if not exists meta;
create schema if not exists snap;

create table if not exists meta.runs (
    run_id            varchar primary key,    -- e.g. 20261120T030000Z-1a2b3c
    started_at        timestamptz not null,   -- local clock
    finished_at       timestamptz,            -- null while running or after a crash
    api_base_url      varchar,
    status            varchar not null,       -- running | complete | partial | failed
    clusters_listed   integer,
    clusters_fetched  integer,
    clusters_failed   integer,
    clusters_gone     integer,
    clusters_skipped  integer,                -- not read: request budget exhausted
    requests_made     integer,
    retries           integer,
    message           varchar
);

create table if not exists meta.run_failures (
    run_id       varchar not null,
    cluster_id   varchar,                    -- null for a failure of the list stage
    stage        varchar not null,           -- list | details | load
    outcome      varchar not null,           -- failed | gone | skipped
    http_status  integer,
    reason       varchar not null,
    raw_body     blob,                       -- redacted, for diagnosis of malformed responses
    recorded_at  timestamptz not null
);

-- One row per cluster per snapshot.
create table if not exists snap.cluster_snapshots (
    run_id                 varchar not null,
    cluster_id             varchar not null,
    snapshot_at            timestamptz not null,
    name                   varchar,
    description            varchar,
    status                 varchar,
    status_message         varchar,
    last_status_change     timestamptz,
    created_at             timestamptz,
    updated_at             timestamptz,
    gpu_type               varchar,
    gpu_count              integer,
    cpu_cores              integer,
    memory_gb              double,
    storage_gb             double,
    storage_type           varchar,
    region                 varchar,
    availability_zone      varchar,
    project_id             varchar,
    project_name           varchar,
    owner_id               varchar,
    template_id            varchar,
    template_name          varchar,
    template_version       varchar,
    docker_image           varchar,
    cuda_version           varchar,
    gpu_health             varchar,
    storage_health         varchar,
    network_health         varchar,
    docker_health          varchar,
    currency               varchar,
    hourly_rate            decimal(18, 6),       -- cost.current_hourly_rate
    total_cost_to_date     decimal(18, 6),
    window_cost            decimal(18, 6),
    metrics_window         varchar,              -- '7d'
    interval_seconds       integer,
    has_metrics            boolean not null,
    has_gpu_series         boolean not null,     -- historical points carry `gpus`
    has_cost_breakdown     boolean not null,
    current_gpu_utilization         double,
    current_gpu_memory_utilization  double,
    current_cpu_utilization         double,
    current_memory_utilization      double,
    primary key (cluster_id, snapshot_at)
);

-- Every `*_cost_per_hour` key of cost.cost_breakdown; component = the key without the suffix
-- (gpu, cpu, memory, storage, network, or a new one the provider adds).
create table if not exists snap.cost_components (
    run_id         varchar not null,
    cluster_id     varchar not null,
    snapshot_at    timestamptz not null,
    component      varchar not null,
    cost_per_hour  decimal(18, 6) not null,
    currency       varchar,
    primary key (cluster_id, snapshot_at, component)
);

create table if not exists snap.projections (
    run_id          varchar not null,
    cluster_id      varchar not null,
    snapshot_at     timestamptz not null,
    horizon         varchar not null,        -- daily | weekly | monthly
    horizon_hours   integer not null,        -- 24 | 168 | 720
    projected_cost  decimal(18, 6) not null,
    currency        varchar,
    basis           varchar,                 -- projection_basis
    primary key (cluster_id, snapshot_at, horizon)
);

create table if not exists snap.alerts (
    run_id         varchar not null,
    cluster_id     varchar not null,
    snapshot_at    timestamptz not null,
    alert_id       varchar not null,
    severity       varchar,
    metric         varchar,
    condition      varchar,
    threshold      double,
    current_value  double,
    duration       varchar,
    triggered_at   timestamptz,
    resolved_at    timestamptz,
    message        varchar,
    primary key (cluster_id, snapshot_at, alert_id)
);

-- Current per-GPU readings at the snapshot instant (metrics.current.gpus).
create table if not exists snap.gpu_current (
    run_id          varchar not null,
    cluster_id      varchar not null,
    snapshot_at     timestamptz not null,
    gpu_id          varchar not null,
    utilization     double,
    memory_used_gb  double,
    memory_total_gb double,
    temperature_c   double,
    power_draw_w    double,
    primary key (cluster_id, snapshot_at, gpu_id)
);

-- One row per cluster per bucket, stored once across overlapping windows; a later snapshot's
-- value replaces an earlier one (late-data revisions). snapshot_at says which snapshot wrote it.
-- Unique on (cluster_id, bucket_at), enforced by the loader (pipeline/store.py) rather than a
-- PRIMARY KEY: on DuckDB an index made the nightly delete-then-insert of ~1.3 M per-GPU rows ~30x
-- slower and the file ~18x larger (bench/store_keys.py). tests/test_store.py checks uniqueness.
create table if not exists snap.metric_points (
    run_id                  varchar not null,
    cluster_id              varchar not null,
    bucket_at               timestamptz not null,   -- bucket covers [bucket_at, +interval)
    interval_seconds        integer not null,
    snapshot_at             timestamptz not null,
    status                  varchar,                -- null: no status sent (counts as billed)
    gpu_utilization         double,
    gpu_memory_utilization  double,
    cpu_utilization         double,
    memory_utilization      double,
    cost                    decimal(18, 6),         -- null when the point carries no cost
    currency                varchar,
    gpu_series_count        integer                 -- number of `gpus` entries, null without
);

-- Per-GPU values of a bucket, unique on (cluster_id, bucket_at, gpu_id) (loader-enforced, as
-- above); replaced as a set with their bucket, so a resize never leaves a stale GPU behind.
create table if not exists snap.gpu_metric_points (
    run_id          varchar not null,
    cluster_id      varchar not null,
    bucket_at       timestamptz not null,
    gpu_id          varchar not null,
    snapshot_at     timestamptz not null,
    utilization     double,
    memory_used_gb  double,
    power_draw_w    double
);

-- Schema `raw`: each detail response as received, already redacted by the client, gzip-compressed;
-- kept store.raw_retention_days days (by fetched_at); `gpucost snapshot --from-raw` rebuilds
-- `snap` from it.
create schema if not exists raw;

create table if not exists raw.responses (
    run_id       varchar not null,
    cluster_id   varchar not null,
    fetched_at   timestamptz not null,       -- local clock, when the response arrived
    snapshot_at  timestamptz,                -- the snapshot instant it carries (data time)
    encoding     varchar not null,           -- gzip
    body         blob not null               -- the redacted response body, compressed
);

-- gpucost store, schema version 3: recommendation decisions and the notification ledger.
-- Schema `meta` only: the build never rewrites it, so decisions survive full refreshes and
-- rebuilds, and the ledger survives crashes and reruns. Times here are the local clock (who
-- decided when, when a message went out), never data time.

-- Every decision ever taken (append-only: the newest per rec_id is in effect).
create table if not exists meta.recommendation_decisions (
    decision_id                 varchar primary key,
    rec_id                      varchar not null,
    action                      varchar not null,     -- dismiss | snooze | reopen
    reason                      varchar,
    until_day                   date,                 -- in effect while the data day < until_day
    decided_by                  varchar not null,     -- GPUCOST_USER, else USER / LOGNAME
    decided_at                  timestamptz not null,
    monthly_savings_at_decision decimal(18, 6),
    resurface_at_savings        decimal(18, 6),       -- a dismissal ends at these savings (+50 %)
    currency                    varchar
);

-- The [[suppress]] entries of the configuration, as last synchronized (replaced as a set).
create table if not exists meta.recommendation_suppressions (
    position     integer primary key,     -- order in the configuration file
    cluster_id   varchar,
    project      varchar,                 -- a project id or name
    kind         varchar,
    reason       varchar not null,
    until_day    date
);

-- One row per event notify has decided to announce (or deliberately not to: is_announced false
-- for a budget level passed over by a higher one found the same night).
create table if not exists meta.notify_events (
    event_id      varchar primary key,
    event_type    varchar not null,
    project_id    varchar,
    payload       json not null,          -- the event as sent, built from the marts only
    is_announced  boolean not null,
    recorded_at   timestamptz not null
);

-- Each event's delivery to each channel: pending until the channel accepted it.
create table if not exists meta.notify_deliveries (
    event_id       varchar not null,
    channel        varchar not null,
    status         varchar not null,      -- pending | sent | skipped (no recipient)
    attempts       integer not null,
    last_error     varchar,               -- our own words, never a response body
    recorded_at    timestamptz not null,
    delivered_at   timestamptz,
    primary key (event_id, channel)
);

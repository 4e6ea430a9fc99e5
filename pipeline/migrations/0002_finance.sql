-- gpucost store, schema version 2: finance.
-- The owner's e-mail from project_info (notifications write to it), the finance configuration
-- as tables the models read (written from the config at every build, so that a threshold or a
-- mapping reaches SQL as data, never pasted into SQL text), and the month close.

alter table snap.cluster_snapshots add column if not exists owner_email varchar;

-- [cost_centers]: project_id -> cost_center; replaced from the configuration at every build.
create table if not exists meta.cost_centers (
    project_id   varchar primary key,
    cost_center  varchar not null
);

-- [[budgets]]: one row per budget; scope fleet | project | cost_center (scope_id null for fleet).
create table if not exists meta.budgets (
    budget_name  varchar primary key,
    scope        varchar not null,
    scope_id     varchar,
    amount       decimal(18, 6) not null,
    currency     varchar not null
);

-- `gpucost close --month`: a closed month and the project_monthly rows it froze.
create table if not exists meta.closed_months (
    month      date primary key,          -- the month's first day
    closed_at  timestamptz not null       -- local clock
);

create table if not exists meta.closed_project_monthly (
    month                     date not null,
    project_id                varchar,
    currency                  varchar not null,
    project_name              varchar,
    owner_id                  varchar,
    cost_center               varchar,
    cost                      decimal(18, 6),
    gpu_cost                  decimal(18, 6),
    gpu_hours                 decimal(18, 6),
    idle_gpu_hours            decimal(18, 6),
    idle_cost                 decimal(18, 6),
    unused_capacity_cost      decimal(18, 6),
    open_monthly_savings      decimal(18, 6),
    realized_monthly_savings  decimal(18, 6),
    first_data_at             timestamptz,
    last_data_at              timestamptz,
    adjustment_cost           decimal(18, 6)
);

"""The FinOps FOCUS 1.2 cost export: one row per cluster, UTC day and cost component.

Where the numbers come from (the snapshot tables, like the marts):
- Each bucket is priced by the snapshot nearest in time to its midpoint (a tie goes to the later
  snapshot); a billed (not stopped) bucket by the nearest snapshot that bills GPUs, if any. This is
  the rule of the models (`sql/intermediate/buckets.sql`), written again here on purpose: the
  export is a second computation that `reconcile` checks against `marts.fleet_daily`.
- A bucket's cost is its own `cost`; a bucket without one costs the pricing snapshot's hourly rate
  x its hours (a stopped bucket: the storage rate, as the contract says storage keeps billing).
- The cost is split over the components (`gpu`, `cpu`, `memory`, `storage`, `network`, or one the
  provider adds) by the pricing snapshot's breakdown; a stopped bucket goes to storage alone.
- Per cluster and day the component amounts are rounded to 6 decimals and the rounding remainder
  goes to the largest component, so that they add up exactly to the day's bucket costs, and the
  file's totals equal `marts.fleet_daily.cost` per day and currency (`reconcile` checks it).
- The provider bills on demand with no discounts or commitments: BilledCost = EffectiveCost =
  ListCost = ContractedCost. The GPU component is priced in GPU-hours (gpu_count x billed hours,
  the same GPU-hours as `marts.idle_waste_daily`), the others per cluster-hour.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import duckdb
import polars as pl

FOCUS_VERSION = "1.2"
DEFAULT_PROVIDER_NAME = "GPU Cloud"
SERVICE_NAME = "GPU Clusters"
SERVICE_CATEGORY = "Compute"
SERVICE_SUBCATEGORY = "Virtual Machines"
RESOURCE_TYPE = "GPU Cluster"
GPU_UNIT = "GPU-Hours"
HOUR_UNIT = "Hours"

# Output order: the FOCUS columns this export fills, then the provider-specific ones (x_).
FOCUS_COLUMNS: tuple[str, ...] = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountStatus",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "AvailabilityZone",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceId",
    "SkuPriceDetails",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_CostComponent",
    "x_ClusterStatus",
)

_PRICED_SQL = """
create or replace temp table _gpucost_focus_priced as
with snapshots as (
    select
        s.cluster_id,
        s.snapshot_at,
        epoch_ms(s.snapshot_at) as at_ms,
        s.gpu_count,
        s.hourly_rate,
        s.currency,
        coalesce(c.gpu_rate, 0) > 0 and coalesce(s.gpu_count, 0) > 0 as bills_gpus,
        coalesce(c.storage_rate, 0) as storage_rate,
    from snap.cluster_snapshots as s
    left join (
        select
            cluster_id,
            snapshot_at,
            sum(case when component = 'gpu' then cost_per_hour else 0 end) as gpu_rate,
            sum(case when component = 'storage' then cost_per_hour else 0 end) as storage_rate,
        from snap.cost_components
        group by all
    ) as c using (cluster_id, snapshot_at)
),
billing as (
    select cluster_id, at_ms from snapshots where bills_gpus
),
buckets as (
    select
        cluster_id,
        bucket_at,
        -- the bucket's midpoint decides which snapshot is nearest in time
        epoch_ms(bucket_at) + cast(interval_seconds as bigint) * 500 as mid_ms,
        interval_seconds,
        coalesce(status, '') = 'stopped' as is_stopped,
        cost,
        currency,
        gpu_series_count,
    from snap.metric_points
),
neighbours as (
    -- The nearest snapshot is the last one at or before the midpoint or the first one at or
    -- after it: four as-of joins (any snapshot, one billing GPUs; before, after) find them
    -- without pairing every bucket with every snapshot of its cluster (a year of history
    -- made that 8,760 x 365 pairs per cluster).
    select
        b.*,
        any_before.at_ms as any_before_ms,
        any_after.at_ms as any_after_ms,
        bill_before.at_ms as bill_before_ms,
        bill_after.at_ms as bill_after_ms,
    from buckets as b
    asof left join snapshots as any_before
        on any_before.cluster_id = b.cluster_id and b.mid_ms >= any_before.at_ms
    asof left join snapshots as any_after
        on any_after.cluster_id = b.cluster_id and b.mid_ms <= any_after.at_ms
    asof left join billing as bill_before
        on bill_before.cluster_id = b.cluster_id and b.mid_ms >= bill_before.at_ms
    asof left join billing as bill_after
        on bill_after.cluster_id = b.cluster_id and b.mid_ms <= bill_after.at_ms
),
chosen as (
    select
        *,
        -- a billed bucket is priced by the nearest snapshot that bills GPUs, if any; the
        -- nearer of the two neighbours wins, a tie goes to the later snapshot
        case
            when not is_stopped and coalesce(bill_before_ms, bill_after_ms) is not null then
                case
                    when bill_after_ms is null then bill_before_ms
                    when bill_before_ms is null then bill_after_ms
                    when mid_ms - bill_before_ms < bill_after_ms - mid_ms then bill_before_ms
                    else bill_after_ms
                end
            else
                case
                    when any_after_ms is null then any_before_ms
                    when any_before_ms is null then any_after_ms
                    when mid_ms - any_before_ms < any_after_ms - mid_ms then any_before_ms
                    else any_after_ms
                end
        end as chosen_ms,
    from neighbours
),
nearest as (
    select
        b.*,
        s.snapshot_at,
        s.gpu_count as snapshot_gpu_count,
        s.hourly_rate,
        s.storage_rate,
        s.currency as snapshot_currency,
    from chosen as b
    join snapshots as s on s.cluster_id = b.cluster_id and s.at_ms = b.chosen_ms
)
select
    cluster_id,
    bucket_at,
    cast(timezone('UTC', bucket_at) as date) as day,
    interval_seconds / 3600.0 as hours,
    is_stopped,
    snapshot_at,
    coalesce(currency, snapshot_currency) as currency,
    coalesce(gpu_series_count, snapshot_gpu_count, 0) as gpu_count,
    cast(coalesce(
        cost,
        -- no cost on the bucket: the pricing snapshot's rate for the hours it covers (a
        -- stopped bucket bills storage only)
        (case when is_stopped then storage_rate else hourly_rate end)
            * cast(interval_seconds as decimal(18, 6)) / 3600
    ) as decimal(18, 6)) as bucket_cost,
from nearest
"""

_ALLOCATION_SQL = """
create or replace temp table _gpucost_focus_alloc as
with groups as (
    -- Buckets of one day priced by the same snapshot (and alike stopped or not) split alike:
    -- add them up first and split each sum once, rather than every hourly bucket.
    select
        cluster_id,
        day,
        currency,
        snapshot_at,
        is_stopped,
        sum(bucket_cost) as group_cost,
        sum(hours) as hours,
        sum(case when not is_stopped then gpu_count * hours else 0 end) as gpu_hours,
    from _gpucost_focus_priced
    group by all
),
components as (
    select
        g.*,
        coalesce(c.component, 'cluster') as component,
        coalesce(c.cost_per_hour, 1) as rate,
        case
            when c.component is null then 1
            when g.is_stopped and c.component <> 'storage' then 0
            else c.cost_per_hour
        end as billing_rate,
    from groups as g
    left join snap.cost_components as c using (cluster_id, snapshot_at)
),
shares as (
    select
        *,
        sum(billing_rate) over split_group as billing_total,
        sum(rate) over split_group as rate_total,
        count(*) over split_group as n_components,
    from components
    window split_group as (partition by cluster_id, day, currency, snapshot_at, is_stopped)
),
split as (
    select
        *,
        -- Stopped without a storage rate: fall back to the full breakdown, and
        -- with an all-zero breakdown to an even split, so that no bucket cost is ever dropped.
        case
            when billing_total > 0 then billing_rate / billing_total
            when rate_total > 0 then rate / rate_total
            else 1.0 / n_components
        end as share,
    from shares
)
select
    cluster_id,
    day,
    currency,
    component,
    sum(cast(group_cost as double) * share) as amount_raw,
    sum(case when share > 0 then hours else 0 end) as billed_hours,
    sum(gpu_hours) as gpu_hours,
from split
group by all
"""

_FINAL_SQL = """
create or replace temp table _gpucost_focus as
with exact as (
    select cluster_id, day, currency, sum(bucket_cost) as day_cost
    from _gpucost_focus_priced
    group by all
),
rounded as (
    select
        a.*,
        cast(round(a.amount_raw, 6) as decimal(18, 6)) as amount,
        row_number() over (
            partition by a.cluster_id, a.day, a.currency
            order by abs(a.amount_raw) desc, a.component
        ) as rank_amount,
    from _gpucost_focus_alloc as a
),
adjusted as (
    -- The rounding remainder goes to the largest component: the parts add up to the
    -- cluster-day's exact decimal cost.
    select
        r.*,
        case
            when r.rank_amount = 1
                then r.amount + e.day_cost
                    - sum(r.amount) over (partition by r.cluster_id, r.day, r.currency)
            else r.amount
        end as cost,
    from rounded as r
    join exact as e using (cluster_id, day, currency)
),
latest as (
    select distinct on (cluster_id) *
    from snap.cluster_snapshots
    order by cluster_id, snapshot_at desc
)
select
    a.cluster_id,
    a.day,
    a.currency,
    a.component,
    cast(a.cost as decimal(18, 6)) as cost,
    case when a.component = 'gpu' then a.gpu_hours else a.billed_hours end as quantity,
    case when a.component = 'gpu' then 'GPU-Hours' else 'Hours' end as unit,
    l.name,
    l.status,
    l.region,
    l.availability_zone,
    l.project_id,
    l.project_name,
    l.gpu_type,
    l.gpu_count,
    l.template_name,
from adjusted as a
left join latest as l using (cluster_id)
where a.cost <> 0 or (case when a.component = 'gpu' then a.gpu_hours else 0 end) > 0
"""

_SELECT_SQL = """
select
    cost as BilledCost,
    $account as BillingAccountId,
    $account as BillingAccountName,
    currency as BillingCurrency,
    strftime(date_trunc('month', day) + interval 1 month, '%Y-%m-%dT%H:%M:%SZ')
        as BillingPeriodEnd,
    strftime(date_trunc('month', day), '%Y-%m-%dT%H:%M:%SZ') as BillingPeriodStart,
    'Usage' as ChargeCategory,
    cast(null as varchar) as ChargeClass,
    -- no commitment discounts: null (the column lets a reader test the status)
    cast(null as varchar) as CommitmentDiscountStatus,
    coalesce(case component
        when 'gpu' then 'GPU compute'
        when 'cpu' then 'CPU compute'
        when 'memory' then 'Memory'
        when 'storage' then 'Storage'
        when 'network' then 'Network'
        when 'cluster' then 'Cluster (no cost breakdown)'
    end, component)
        || ' of a ' || coalesce(gpu_type, 'GPU') || ' x'
        || coalesce(cast(gpu_count as varchar), '?') || ' cluster' as ChargeDescription,
    'Usage-Based' as ChargeFrequency,
    strftime(day + interval 1 day, '%Y-%m-%dT%H:%M:%SZ') as ChargePeriodEnd,
    strftime(day, '%Y-%m-%dT%H:%M:%SZ') as ChargePeriodStart,
    -- DECIMAL, as FOCUS requires (an integer-looking quantity reads as an integer column)
    cast(round(quantity, 6) as decimal(18, 6)) as ConsumedQuantity,
    unit as ConsumedUnit,
    cost as ContractedCost,
    cost as EffectiveCost,
    -- the provider pre-generates no invoice ids: null, as FOCUS asks then
    cast(null as varchar) as InvoiceId,
    $provider as InvoiceIssuerName,
    cost as ListCost,
    case when quantity > 0
        then cast(round(cast(cost as double) / quantity, 6) as decimal(18, 6)) end
        as ListUnitPrice,
    'Standard' as PricingCategory,
    cast(round(quantity, 6) as decimal(18, 6)) as PricingQuantity,
    unit as PricingUnit,
    -- priced and billed in one currency: the pricing-currency columns repeat the billing ones
    case when quantity > 0
        then cast(round(cast(cost as double) / quantity, 6) as decimal(18, 6)) end
        as PricingCurrencyContractedUnitPrice,
    cost as PricingCurrencyEffectiveCost,
    case when quantity > 0
        then cast(round(cast(cost as double) / quantity, 6) as decimal(18, 6)) end
        as PricingCurrencyListUnitPrice,
    $provider as ProviderName,
    $provider as PublisherName,
    region as RegionId,
    region as RegionName,
    availability_zone as AvailabilityZone,
    cluster_id as ResourceId,
    name as ResourceName,
    'GPU Cluster' as ResourceType,
    'Compute' as ServiceCategory,
    'GPU Clusters' as ServiceName,
    'Virtual Machines' as ServiceSubcategory,
    gpu_type as SkuId,
    component as SkuMeter,
    -- one price of one SKU: the GPU type, the component and its unit price
    gpu_type || '/' || component || '/' || coalesce(cast(
        case when quantity > 0 then cast(round(cast(cost as double) / quantity, 6)
        as decimal(18, 6)) end as varchar), 'none') as SkuPriceId,
    cast(json_object('x_CostComponent', component, 'x_PricingUnit', unit) as varchar)
        as SkuPriceDetails,
    project_id as SubAccountId,
    project_name as SubAccountName,
    cast(json_object(
        'gpucost_component', component,
        'template_name', template_name
    ) as varchar) as Tags,
    component as x_CostComponent,
    status as x_ClusterStatus,
from _gpucost_focus
order by day, cluster_id, component
"""


def build_focus(
    con: duckdb.DuckDBPyConnection, *, provider_name: str = DEFAULT_PROVIDER_NAME
) -> pl.DataFrame:
    """FOCUS 1.2 rows from the snapshot tables, in `FOCUS_COLUMNS` order, sorted.

    Leaves the temp table `_gpucost_focus` (cluster_id, day, currency, component, cost,
    quantity, unit and the cluster's latest attributes) on `con` for the report to reuse.
    `con` must use the UTC time zone.
    """
    con.execute(_PRICED_SQL)
    con.execute(_ALLOCATION_SQL)
    con.execute(_FINAL_SQL)
    account = _billing_account(con)
    frame = con.sql(_SELECT_SQL, params={"provider": provider_name, "account": account}).pl()
    return frame.select(FOCUS_COLUMNS)


_ADJUSTMENT_SQL = """
select
    cast(adjustment_cost as decimal(18, 6)) as BilledCost,
    $account as BillingAccountId,
    $account as BillingAccountName,
    currency as BillingCurrency,
    strftime(month + interval 1 month, '%Y-%m-%dT%H:%M:%SZ') as BillingPeriodEnd,
    strftime(month, '%Y-%m-%dT%H:%M:%SZ') as BillingPeriodStart,
    'Adjustment' as ChargeCategory,
    cast(null as varchar) as ChargeClass,
    'Revisions of closed months of project ' || coalesce(project_name, project_id, '(none)')
        || ', booked in this period' as ChargeDescription,
    'One-Time' as ChargeFrequency,
    strftime(month + interval 1 month, '%Y-%m-%dT%H:%M:%SZ') as ChargePeriodEnd,
    strftime(month, '%Y-%m-%dT%H:%M:%SZ') as ChargePeriodStart,
    cast(null as varchar) as CommitmentDiscountStatus,
    cast(null as decimal(18, 6)) as ConsumedQuantity,
    cast(null as varchar) as ConsumedUnit,
    cast(adjustment_cost as decimal(18, 6)) as ContractedCost,
    cast(adjustment_cost as decimal(18, 6)) as EffectiveCost,
    cast(null as varchar) as InvoiceId,
    $provider as InvoiceIssuerName,
    cast(adjustment_cost as decimal(18, 6)) as ListCost,
    cast(null as decimal(18, 6)) as ListUnitPrice,
    cast(null as varchar) as PricingCategory,
    cast(null as decimal(18, 6)) as PricingQuantity,
    cast(null as varchar) as PricingUnit,
    cast(null as decimal(18, 6)) as PricingCurrencyContractedUnitPrice,
    cast(adjustment_cost as decimal(18, 6)) as PricingCurrencyEffectiveCost,
    cast(null as decimal(18, 6)) as PricingCurrencyListUnitPrice,
    $provider as ProviderName,
    $provider as PublisherName,
    cast(null as varchar) as RegionId,
    cast(null as varchar) as RegionName,
    cast(null as varchar) as AvailabilityZone,
    cast(null as varchar) as ResourceId,
    cast(null as varchar) as ResourceName,
    cast(null as varchar) as ResourceType,
    'Compute' as ServiceCategory,
    'GPU Clusters' as ServiceName,
    'Virtual Machines' as ServiceSubcategory,
    cast(null as varchar) as SkuId,
    cast(null as varchar) as SkuMeter,
    cast(null as varchar) as SkuPriceId,
    cast(null as varchar) as SkuPriceDetails,
    project_id as SubAccountId,
    project_name as SubAccountName,
    cast(null as varchar) as Tags,
    'adjustment' as x_CostComponent,
    cast(null as varchar) as x_ClusterStatus,
from marts.project_monthly
where adjustment_cost <> 0 and not is_closed
order by month, currency, project_id
"""


def build_adjustments(
    con: duckdb.DuckDBPyConnection, *, provider_name: str = DEFAULT_PROVIDER_NAME
) -> pl.DataFrame:
    """FOCUS rows (`ChargeCategory` Adjustment), one per project and currency with revisions of
    closed months, in the period that books them (`marts.project_monthly.adjustment_cost`)."""
    account = _billing_account(con)
    frame = con.sql(_ADJUSTMENT_SQL, params={"provider": provider_name, "account": account}).pl()
    return frame.select(FOCUS_COLUMNS)


def _billing_account(con: duckdb.DuckDBPyConnection) -> str:
    """The account the data was read from: the API host of the newest run (no credentials)."""
    rows = con.execute(
        "select api_base_url from meta.runs where api_base_url is not null"
        " order by started_at desc limit 1"
    ).fetchall()
    host = urlsplit(rows[0][0]).hostname if rows else None
    return host or "unknown"


def reconcile(con: duckdb.DuckDBPyConnection) -> list[tuple[object, str, object, object]]:
    """Days where the export's total differs from `marts.fleet_daily.cost` by a cent or more.

    Returns (day, currency, focus_total, mart_total) rows; empty when they agree.
    """
    return [
        tuple(r)
        for r in con.execute(
            """
            with focus as (
                select day, currency, sum(cost) as focus_total
                from _gpucost_focus group by all
            )
            select coalesce(f.day, m.day) as day, coalesce(f.currency, m.currency) as currency,
                   f.focus_total, m.cost
            from focus as f
            full join marts.fleet_daily as m using (day, currency)
            where abs(coalesce(f.focus_total, 0) - coalesce(m.cost, 0)) >= 0.01
            order by 1, 2
            """
        ).fetchall()
    ]

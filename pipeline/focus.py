"""The FinOps FOCUS 1.2 cost export: one row per cluster, UTC day and cost component.

The rows are `marts.cluster_cost_daily` (sql/marts/cluster_cost_daily.sql), the same bucket costs
as `marts.fleet_daily` split over each pricing snapshot's breakdown, so that every number has one
home in sql/ and one test; this module only names them in FOCUS columns:
- The provider bills on demand with no discounts or commitments: BilledCost = EffectiveCost =
  ListCost = ContractedCost. The GPU component is priced in GPU-hours (gpu_count x billed hours,
  the same GPU-hours as `marts.idle_waste_daily`), the others per cluster-hour.
- Revisions of closed months (`gpucost close`) are `ChargeCategory` Adjustment rows in the first
  open period (`build_adjustments`, from `marts.project_monthly.adjustment_cost`).
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
from marts.cluster_cost_daily
order by day, cluster_id, component
"""


def build_focus(
    con: duckdb.DuckDBPyConnection, *, provider_name: str = DEFAULT_PROVIDER_NAME
) -> pl.DataFrame:
    """FOCUS 1.2 rows from `marts.cluster_cost_daily`, in `FOCUS_COLUMNS` order, sorted.

    `con` must use the UTC time zone.
    """
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
                from marts.cluster_cost_daily group by all
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

-- materialized: table
-- incremental: per cluster where day >= from_day
-- The cost of each cluster per UTC day, currency and cost component (gpu, cpu, memory, storage,
-- network, or one the provider adds; `cluster` when a snapshot has no breakdown), without the
-- cluster's current configuration: marts.cluster_cost_daily adds it. A past day's parts do not
-- change when the cluster does, so they are kept night by night (rebuilt whole every night, a
-- row per cluster-day of the history, they were the slowest step of the nightly build of
-- 1,000 clusters x 365 days; 18 M rows at 10,000 clusters). Each bucket's
-- cost (as intermediate.buckets prices it, the same as fleet_daily) is split by the breakdown
-- of the snapshot that priced it; a stopped bucket goes to storage alone. Per cluster and day
-- the parts are rounded to 6 decimals and the remainder goes to the largest, so that they add up
-- exactly to the day's bucket costs. quantity: GPU-hours for `gpu` (as idle_waste_daily), else
-- billed hours.
with

-- an incremental build recomputes the whole days of its scope (a batch of a large build, the
-- days of its clusters only: the windows below would otherwise sort every cluster's history)
buckets as (
    select *
    from intermediate.buckets
    where day >= cast(getvariable('build_from_day_at') as date)
    -- the scope's clusters as a range too: a plain filter skips the row groups of the others
    -- (a batch of a full refresh otherwise read every bucket written so far)
    and cluster_id between (select min(cluster_id) from _gpucost_scope)
        and (select max(cluster_id) from _gpucost_scope)
    and exists (
        select 1 from _gpucost_scope as scope
        where scope.cluster_id = buckets.cluster_id
        and buckets.day >= scope.from_day
    )
),

components as (
    select * from staging.cost_components
),

-- buckets of one day priced by one snapshot (and alike stopped or not) split alike
groups as (
    select
        cluster_id,
        day,
        currency,
        priced_by_snapshot_at,
        not is_billed as is_stopped,
        sum(cost) as group_cost,
        sum(hours) as hours,
        sum(gpu_hours) as gpu_hours,
    from buckets
    group by cluster_id, day, currency, priced_by_snapshot_at, not is_billed
),

with_components as (
    select
        groups.*,
        coalesce(components.component, 'cluster') as component,
        coalesce(components.cost_per_hour, 1) as rate,
        case
            when components.component is null then 1
            when groups.is_stopped and components.component <> 'storage' then 0
            else components.cost_per_hour
        end as billing_rate,
    from groups
    left join components
        on components.cluster_id = groups.cluster_id
        and components.snapshot_at = groups.priced_by_snapshot_at
),

shares as (
    select
        *,
        sum(billing_rate) over split_group as billing_total,
        sum(rate) over split_group as rate_total,
        count(*) over split_group as n_components,
    from with_components
    window split_group as (
        partition by cluster_id, day, currency, priced_by_snapshot_at, is_stopped
    )
),

-- stopped without a storage rate: the full breakdown, and with an all-zero breakdown an even
-- split, so that no bucket cost is ever dropped
split as (
    select
        *,
        case
            when billing_total > 0 then cast(billing_rate as double) / cast(billing_total as double)
            when rate_total > 0 then cast(rate as double) / cast(rate_total as double)
            else 1.0 / n_components
        end as share,
    from shares
),

allocated as (
    select
        cluster_id,
        day,
        currency,
        component,
        sum(cast(group_cost as double) * share) as amount_raw,
        sum(case when share > 0 then hours else 0 end) as billed_hours,
        sum(gpu_hours) as gpu_hours,
    from split
    group by cluster_id, day, currency, component
),

exact as (
    select cluster_id, day, currency, sum(cost) as day_cost,
    from buckets
    group by cluster_id, day, currency
),

rounded as (
    select
        allocated.*,
        cast(round(allocated.amount_raw, 6) as decimal(18, 6)) as amount,
        row_number() over (
            partition by allocated.cluster_id, allocated.day, allocated.currency
            order by abs(allocated.amount_raw) desc, allocated.component
        ) as rank_amount,
    from allocated
),

adjusted as (
    select
        rounded.*,
        case
            when rounded.rank_amount = 1
                then rounded.amount + exact.day_cost - sum(rounded.amount) over (
                    partition by rounded.cluster_id, rounded.day, rounded.currency
                )
            else rounded.amount
        end as cost,
    from rounded
    inner join exact
        on exact.cluster_id = rounded.cluster_id
        and exact.day = rounded.day
        and exact.currency = rounded.currency
),

final as (
    select
        cluster_id,
        day,
        currency,
        component,
        cast(cost as decimal(18, 6)) as cost,
        case when component = 'gpu' then gpu_hours else billed_hours end as quantity,
        case when component = 'gpu' then 'GPU-Hours' else 'Hours' end as unit,
    from adjusted
    where cost <> 0
    or (case when component = 'gpu' then gpu_hours else 0 end) > 0
)

select * from final

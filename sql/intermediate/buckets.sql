-- materialized: table
-- incremental: per cluster where bucket_at >= from_at
-- One row per cluster per bucket: billed or not, its GPU count, idle GPUs, and its GPU cost,
-- priced by the nearest snapshot in time (DESIGN "Definitions"). Every mart about waste reads
-- this, so it is a table.
with

-- an incremental build computes only the buckets of its scope (every bucket on a full one)
points as (
    select *
    from staging.metric_points as points
    where points.bucket_at >= getvariable('build_from_at')
    and exists (
        select 1 from _gpucost_scope as scope
        where scope.cluster_id = points.cluster_id
        and points.bucket_at >= scope.from_at
    )
),

gpu_stats as (
    select *
    from intermediate.gpu_bucket_stats
    where bucket_at >= getvariable('build_from_at')
),

ranges as (
    select * from intermediate.snapshot_ranges
),

-- each range cut into the days (numbered from the epoch) it covers within the buckets' span:
-- a bucket is then compared with the ranges of its own day only, not with every snapshot of
-- its cluster (which grows with the square of the history)
span as (
    select
        min(epoch_ms(bucket_mid_at)) as first_ms,
        max(epoch_ms(bucket_mid_at)) as last_ms,
    from points
),

range_days as (
    select
        ranges.*,
        unnest(generate_series(
            greatest(ranges.from_ms, span.first_ms) // 86400000,
            least(ranges.to_ms - 1, span.last_ms) // 86400000
        )) as day_number,
    from ranges
    cross join span
    -- no bucket to price: no span (greatest() would skip its null and reach -infinity)
    where span.first_ms is not null
),

nearest as (
    select
        points.cluster_id,
        points.bucket_at,
        any_value(nearest_any.snapshot_at) as any_snapshot_at,
        any_value(nearest_billing.snapshot_at) as billing_snapshot_at,
    from points
    left join range_days as nearest_any
        on nearest_any.cluster_id = points.cluster_id
        and nearest_any.family = 'any'
        and nearest_any.day_number = epoch_ms(points.bucket_mid_at) // 86400000
        and epoch_ms(points.bucket_mid_at) >= nearest_any.from_ms
        and epoch_ms(points.bucket_mid_at) < nearest_any.to_ms
    left join range_days as nearest_billing
        on nearest_billing.cluster_id = points.cluster_id
        and nearest_billing.family = 'billing'
        and nearest_billing.day_number = epoch_ms(points.bucket_mid_at) // 86400000
        and epoch_ms(points.bucket_mid_at) >= nearest_billing.from_ms
        and epoch_ms(points.bucket_mid_at) < nearest_billing.to_ms
    group by points.cluster_id, points.bucket_at
),

-- the rates of the snapshots that price these buckets only: the whole fleet's history of
-- snapshots as a join's build side held memory in proportion to the fleet (an incremental
-- build of 10,000 clusters failed under the build's memory limit)
rates as (
    select snapshot_rates.*
    from intermediate.snapshot_rates
    semi join (
        select cluster_id, any_snapshot_at as snapshot_at from nearest
        union
        select cluster_id, billing_snapshot_at as snapshot_at from nearest
    ) as pricing
        on pricing.cluster_id = snapshot_rates.cluster_id
        and pricing.snapshot_at = snapshot_rates.snapshot_at
),

joined as (
    select
        points.cluster_id,
        points.bucket_at,
        points.bucket_end_at,
        points.day,
        points.hours,
        points.status,
        points.is_billed,
        points.gpu_utilization,
        points.cost as reported_cost,
        coalesce(points.currency, near_any.currency, near_billing.currency) as currency,
        gpu_stats.series_gpus is not null as has_gpu_series,
        coalesce(gpu_stats.series_gpus, near_any.gpu_count, 0) as gpu_count,
        gpu_stats.idle_gpus as series_idle_gpus,
        gpu_stats.busy_gpus as series_busy_gpus,
        gpu_stats.memory_held_idle_gpus,
        gpu_stats.unused_gpu_share,
        gpu_stats.utilization_sum,
        -- the pricing snapshot: the nearest billing GPUs, else the nearest at all
        coalesce(near_billing.snapshot_at, near_any.snapshot_at) as priced_by_snapshot_at,
        coalesce(near_billing.gpu_count, near_any.gpu_count) as price_gpu_count,
        coalesce(near_billing.gpu_per_hour, near_any.gpu_per_hour) as gpu_per_hour,
        coalesce(
            near_billing.components_per_hour, near_any.components_per_hour
        ) as components_per_hour,
        coalesce(near_billing.hourly_rate, near_any.hourly_rate) as billing_hourly_rate,
        near_any.storage_per_hour,
    from points
    inner join nearest
        on nearest.cluster_id = points.cluster_id
        and nearest.bucket_at = points.bucket_at
    left join gpu_stats
        on gpu_stats.cluster_id = points.cluster_id
        and gpu_stats.bucket_at = points.bucket_at
    left join rates as near_any
        on near_any.cluster_id = nearest.cluster_id
        and near_any.snapshot_at = nearest.any_snapshot_at
    left join rates as near_billing
        on near_billing.cluster_id = nearest.cluster_id
        and near_billing.snapshot_at = nearest.billing_snapshot_at
),

counted as (
    select
        *,
        case
            when not is_billed or gpu_count = 0 then 0
            when has_gpu_series then series_idle_gpus
            when gpu_utilization < getvariable('idle_threshold_pct') then gpu_count
            else 0
        end as idle_gpus,
        case
            when not is_billed or gpu_count = 0 then 0
            when has_gpu_series then series_busy_gpus
            when gpu_utilization >= getvariable('idle_threshold_pct') then gpu_count
            else 0
        end as busy_gpus,
        case
            when not is_billed then 0
            when has_gpu_series then coalesce(unused_gpu_share, 0)
            else coalesce(gpu_count * (1 - gpu_utilization / 100), 0)
        end as unused_gpus,
        case
            when not is_billed then null
            when has_gpu_series then utilization_sum
            else gpu_count * cast(gpu_utilization as decimal(18, 6))
        end as gpu_utilization_sum,
        -- what accrued in the bucket; estimated from the nearest snapshot's rate when the point
        -- carries no cost (storage only when stopped)
        coalesce(
            reported_cost,
            case when is_billed then billing_hourly_rate else storage_per_hour end
            * hours
        ) as cost,
        reported_cost is null as is_cost_estimated,
        -- the GPU share of the bucket's cost, for all its GPUs together
        case
            when not is_billed or gpu_count = 0 then cast(0 as decimal(38, 12))
            -- nothing billed per hour: no GPU share to price (as the truth does)
            when reported_cost is not null and components_per_hour = 0
                then cast(0 as decimal(38, 12))
            when reported_cost is not null and components_per_hour > 0 then cast(
                cast(reported_cost as decimal(38, 12)) * gpu_per_hour / components_per_hour
                as decimal(38, 12)
            )
            when reported_cost is null and price_gpu_count > 0 then cast(
                cast(gpu_per_hour as decimal(38, 12)) * hours * gpu_count / price_gpu_count
                as decimal(38, 12)
            )
        end as gpu_cost,
    from joined
),

final as (
    select
        cluster_id,
        bucket_at,
        bucket_end_at,
        day,
        hours,
        status,
        is_billed,
        currency,
        has_gpu_series,
        gpu_count,
        gpu_utilization,
        idle_gpus,
        busy_gpus,
        is_billed and gpu_count > 0 and idle_gpus = gpu_count as is_all_idle,
        cost,
        is_cost_estimated,
        gpu_cost,
        priced_by_snapshot_at,
        case when is_billed then gpu_count * hours else 0 end as gpu_hours,
        idle_gpus * hours as idle_gpu_hours,
        coalesce(memory_held_idle_gpus, 0) * hours as memory_held_idle_gpu_hours,
        gpu_utilization_sum * hours as utilization_gpu_hours,
        case
            when gpu_count > 0
                then cast(gpu_cost * idle_gpus / gpu_count as decimal(38, 12))
            else cast(0 as decimal(38, 12))
        end as idle_cost,
        case
            when gpu_count > 0
                then cast(gpu_cost * unused_gpus / gpu_count as decimal(38, 12))
            else cast(0 as decimal(38, 12))
        end as unused_capacity_cost,
    from counted
)

select * from final

-- Every projection whose horizon has fully elapsed by the newest snapshot, with its actual
-- cost: the later snapshots' bucket costs (newest value per bucket) when they cover the whole
-- horizon, else the total_cost_to_date difference (a decrease counts as a reset to zero) when
-- it covers more, else the buckets. Coverage is the share of the horizon's hours accounted for.
with

projections as (
    select * from staging.projections
),

buckets as (
    select * from intermediate.buckets
),

rates as (
    select * from intermediate.snapshot_rates
),

fleet as (
    select max(snapshot_at) as latest_snapshot_at from staging.cluster_snapshots
),

elapsed as (
    select projections.*
    from projections
    cross join fleet
    where projections.elapsed_at <= fleet.latest_snapshot_at
),

-- each horizon cut into the days (numbered from the epoch) it covers: a bucket is compared
-- with the horizons of its own day only, not with every projection of its cluster (which
-- grows with the square of the history)
elapsed_days as (
    select
        cluster_id,
        projected_at,
        horizon,
        horizon_start_at,
        horizon_end_at,
        unnest(generate_series(
            epoch_ms(horizon_start_at) // 86400000, (epoch_ms(horizon_end_at) - 1) // 86400000
        )) as day_number,
    from elapsed
),

from_buckets as (
    select
        elapsed_days.cluster_id,
        elapsed_days.projected_at,
        elapsed_days.horizon,
        sum(buckets.cost) as bucket_cost,
        sum(buckets.hours) as bucket_hours,
    from elapsed_days
    inner join buckets
        on buckets.cluster_id = elapsed_days.cluster_id
        and epoch_ms(buckets.bucket_at) // 86400000 = elapsed_days.day_number
        and buckets.bucket_at >= elapsed_days.horizon_start_at
        and buckets.bucket_at < elapsed_days.horizon_end_at
    where not buckets.is_cost_estimated
    group by elapsed_days.cluster_id, elapsed_days.projected_at, elapsed_days.horizon
),

totals as (
    select
        cluster_id,
        snapshot_at,
        date_trunc('hour', snapshot_at) as counted_until,
        total_cost_to_date,
        lag(total_cost_to_date) over (
            partition by cluster_id order by snapshot_at
        ) as previous_total,
    from rates
    where total_cost_to_date is not null
),

increases as (
    select
        cluster_id,
        snapshot_at,
        counted_until,
        case
            when previous_total is null then null
            when total_cost_to_date >= previous_total then total_cost_to_date - previous_total
            -- a decrease: the cluster was recreated under the same id and restarted its total
            else total_cost_to_date
        end as increase,
    from totals
),

from_totals as (
    select
        elapsed.cluster_id,
        elapsed.projected_at,
        elapsed.horizon,
        sum(increases.increase) as total_cost,
        max(increases.counted_until) as counted_until,
    from elapsed
    inner join increases
        on increases.cluster_id = elapsed.cluster_id
        and increases.snapshot_at > elapsed.projected_at
        and increases.counted_until <= elapsed.horizon_end_at
    -- the projecting snapshot must carry a total too, else the first increase is unknown
    where exists (
        select 1 from totals
        where totals.cluster_id = elapsed.cluster_id
        and totals.snapshot_at = elapsed.projected_at
    )
    group by elapsed.cluster_id, elapsed.projected_at, elapsed.horizon
),

covered as (
    select
        elapsed.cluster_id,
        elapsed.projected_at,
        elapsed.horizon,
        elapsed.horizon_hours,
        elapsed.horizon_start_at,
        elapsed.horizon_end_at,
        elapsed.projected_cost,
        elapsed.currency,
        from_buckets.bucket_cost,
        100.0 * coalesce(from_buckets.bucket_hours, 0) / elapsed.horizon_hours
            as bucket_coverage_pct,
        from_totals.total_cost,
        100.0 * coalesce(
            epoch(from_totals.counted_until) - epoch(elapsed.horizon_start_at), 0
        ) / 3600 / elapsed.horizon_hours as total_coverage_pct,
    from elapsed
    left join from_buckets
        on from_buckets.cluster_id = elapsed.cluster_id
        and from_buckets.projected_at = elapsed.projected_at
        and from_buckets.horizon = elapsed.horizon
    left join from_totals
        on from_totals.cluster_id = elapsed.cluster_id
        and from_totals.projected_at = elapsed.projected_at
        and from_totals.horizon = elapsed.horizon
),

chosen as (
    select
        *,
        case
            when bucket_coverage_pct >= 100 then 'buckets'
            when total_cost is not null and total_coverage_pct >= bucket_coverage_pct
                then 'total_cost_to_date'
            else 'buckets'
        end as actual_source,
    from covered
),

final as (
    select
        cluster_id,
        projected_at,
        horizon,
        horizon_hours,
        horizon_start_at,
        horizon_end_at,
        projected_cost,
        currency,
        actual_source,
        case
            when actual_source = 'buckets' then coalesce(bucket_cost, 0)
            else total_cost
        end as actual_cost,
        case
            when actual_source = 'buckets' then bucket_coverage_pct
            else total_coverage_pct
        end as coverage_pct,
    from chosen
)

select * from final

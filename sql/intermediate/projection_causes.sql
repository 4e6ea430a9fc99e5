-- Why a cluster's cost left its projection (horizons that have elapsed), from what the
-- snapshots inside the horizon show: deleted > stopped > started > resize > rate_change, else
-- usage (the first that applies; a bigger event explains more of the drift than a smaller one
-- that came with it).
with

projections as (
    select * from staging.projections
),

rates as (
    select * from intermediate.snapshot_rates
),

buckets as (
    select * from intermediate.buckets
),

presence as (
    select * from intermediate.cluster_presence
),

origin as (
    select
        projections.cluster_id,
        projections.projected_at,
        projections.horizon,
        projections.horizon_start_at,
        projections.horizon_end_at,
        projections.elapsed_at,
        rates.status,
        rates.gpu_count,
        rates.hourly_rate,
    from projections
    inner join rates
        on rates.cluster_id = projections.cluster_id
        and rates.snapshot_at = projections.projected_at
    -- only horizons that have elapsed are scored (intermediate.projection_actuals)
    where projections.elapsed_at <= (select max(snapshot_at) from staging.cluster_snapshots)
),

later_snapshots as (
    select
        origin.cluster_id,
        origin.projected_at,
        origin.horizon,
        bool_or(later.status = 'stopped' and origin.status <> 'stopped') as has_stopped,
        bool_or(later.status <> 'stopped' and origin.status = 'stopped') as has_started,
        bool_or(later.gpu_count <> origin.gpu_count) as has_resize,
        bool_or(
            later.hourly_rate <> origin.hourly_rate
            and later.status = origin.status
            and later.gpu_count = origin.gpu_count
        ) as has_rate_change,
    from origin
    inner join rates as later
        on later.cluster_id = origin.cluster_id
        and later.snapshot_at > origin.projected_at
        and later.snapshot_at <= origin.elapsed_at
    group by origin.cluster_id, origin.projected_at, origin.horizon
),

-- each horizon cut into the days (numbered from the epoch) it covers: a bucket is compared
-- with the horizons of its own day only, not with every projection of its cluster
origin_days as (
    select
        *,
        unnest(generate_series(
            epoch_ms(horizon_start_at) // 86400000, (epoch_ms(horizon_end_at) - 1) // 86400000
        )) as day_number,
    from origin
),

horizon_buckets as (
    select
        origin_days.cluster_id,
        origin_days.projected_at,
        origin_days.horizon,
        bool_or(not buckets.is_billed and origin_days.status <> 'stopped') as has_stopped,
        bool_or(buckets.is_billed and origin_days.status = 'stopped') as has_started,
        bool_or(buckets.gpu_count <> origin_days.gpu_count and buckets.is_billed)
            as has_resize,
    from origin_days
    inner join buckets
        on buckets.cluster_id = origin_days.cluster_id
        and epoch_ms(buckets.bucket_at) // 86400000 = origin_days.day_number
        and buckets.bucket_at >= origin_days.horizon_start_at
        and buckets.bucket_at < origin_days.horizon_end_at
    group by origin_days.cluster_id, origin_days.projected_at, origin_days.horizon
),

-- the first run that no longer saw the cluster came inside the horizon
deletions as (
    select
        origin.cluster_id,
        origin.projected_at,
        origin.horizon,
        true as has_deleted,
    from origin
    inner join presence on presence.cluster_id = origin.cluster_id
    where presence.is_deleted
    and presence.deleted_by_run_at > origin.projected_at
    and presence.deleted_by_run_at <= origin.elapsed_at
),

final as (
    select
        origin.cluster_id,
        origin.projected_at,
        origin.horizon,
        case
            when coalesce(deletions.has_deleted, false) then 'deleted'
            when coalesce(later_snapshots.has_stopped, false)
                or coalesce(horizon_buckets.has_stopped, false) then 'stopped'
            when coalesce(later_snapshots.has_started, false)
                or coalesce(horizon_buckets.has_started, false) then 'started'
            when coalesce(later_snapshots.has_resize, false)
                or coalesce(horizon_buckets.has_resize, false) then 'resize'
            when coalesce(later_snapshots.has_rate_change, false) then 'rate_change'
            else 'usage'
        end as cause,
    from origin
    left join later_snapshots
        on later_snapshots.cluster_id = origin.cluster_id
        and later_snapshots.projected_at = origin.projected_at
        and later_snapshots.horizon = origin.horizon
    left join horizon_buckets
        on horizon_buckets.cluster_id = origin.cluster_id
        and horizon_buckets.projected_at = origin.projected_at
        and horizon_buckets.horizon = origin.horizon
    left join deletions
        on deletions.cluster_id = origin.cluster_id
        and deletions.projected_at = origin.projected_at
        and deletions.horizon = origin.horizon
)

select * from final

-- materialized: table
-- incremental: per cluster where evidence_snapshot_at > from_at
-- Per cluster, over its latest snapshot's window (lookback_days), the GPUs that were idle nearly
-- all the time (>= stop_idle_share_pct of their billed hours) and the memory they held while
-- idle: the per-GPU evidence of an open stop_idle or downsize recommendation.
with

presence as (
    select * from intermediate.cluster_presence
),

-- an incremental build's scope starts at or before the latest 7-day window of every cluster
-- whose latest snapshot is new; a longer lookback reaches further back
gpu_buckets as (
    select *
    from intermediate.gpu_buckets
    where bucket_at >= getvariable('build_from_at')
        - to_hours((getvariable('lookback_days') - 7) * 24)
),

windows as (
    select
        cluster_id,
        last_snapshot_at,
        date_trunc('hour', last_snapshot_at) - to_hours(getvariable('lookback_days') * 24)
            as window_start_at,
        date_trunc('hour', last_snapshot_at) as window_end_at,
    from presence
    where exists (
        select 1 from _gpucost_scope as scope
        where scope.cluster_id = presence.cluster_id
        and presence.last_snapshot_at > scope.from_at
    )
),

per_gpu as (
    select
        gpu_buckets.cluster_id,
        gpu_buckets.gpu_id,
        windows.last_snapshot_at as evidence_snapshot_at,
        count(*) as billed_hours,
        count(*) filter (where gpu_buckets.is_idle) as idle_hours,
        max(gpu_buckets.memory_used_gb) filter (where gpu_buckets.is_idle) as max_idle_memory_gb,
    from gpu_buckets
    inner join windows
        on windows.cluster_id = gpu_buckets.cluster_id
        and gpu_buckets.bucket_at >= windows.window_start_at
        and gpu_buckets.bucket_at < windows.window_end_at
    group by gpu_buckets.cluster_id, gpu_buckets.gpu_id, windows.last_snapshot_at
),

mostly_idle as (
    select *
    from per_gpu
    where 100.0 * idle_hours >= getvariable('stop_idle_share_pct') * billed_hours
),

final as (
    select
        cluster_id,
        evidence_snapshot_at,
        count(*) as idle_gpus,
        string_agg(gpu_id, ', ' order by try_cast(gpu_id as integer), gpu_id) as idle_gpu_ids,
        min(idle_hours) as min_idle_hours,
        max(billed_hours) as billed_hours,
        sum(coalesce(max_idle_memory_gb, 0)) as idle_memory_gb,
    from mostly_idle
    group by cluster_id, evidence_snapshot_at
)

select * from final

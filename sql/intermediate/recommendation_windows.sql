-- materialized: table
-- incremental: per cluster where window_end_at > from_at
-- For every snapshot of every cluster, what its window of buckets shows
-- ([floor_hour(snapshot) - lookback_days x 24 h, floor_hour(snapshot)), 7 days by default, over
-- the stored history): billed and all-idle buckets, the hours of evidence, the P95 of busy GPUs,
-- and the runs of whole-cluster idleness. Recommendations are evaluated at every
-- snapshot so that their history (first seen, last seen, resolved) follows from the data.
with

-- an incremental build recomputes the windows that reach into its scope
rates as (
    select *
    from intermediate.snapshot_rates as rates
    where exists (
        select 1 from _gpucost_scope as scope
        where scope.cluster_id = rates.cluster_id
        and date_trunc('hour', rates.snapshot_at) > scope.from_at
    )
),

buckets as (
    select *
    from intermediate.buckets
    where bucket_at >= getvariable('build_from_at') - to_hours(getvariable('lookback_days') * 24)
),

windows as (
    select
        rates.*,
        date_trunc('hour', rates.snapshot_at) - to_hours(getvariable('lookback_days') * 24)
            as window_start_at,
        date_trunc('hour', rates.snapshot_at) as window_end_at,
    from rates
),

-- each window cut into the days (numbered from the epoch) it covers: a bucket is compared
-- with the windows of its own day only, not with every snapshot of its cluster
window_days as (
    select
        cluster_id,
        snapshot_at,
        window_start_at,
        window_end_at,
        unnest(generate_series(
            epoch_ms(window_start_at) // 86400000, (epoch_ms(window_end_at) - 1) // 86400000
        )) as day_number,
    from windows
),

window_buckets as (
    select
        window_days.cluster_id,
        window_days.snapshot_at,
        buckets.bucket_at,
        buckets.hours,
        buckets.is_billed,
        buckets.is_all_idle,
        buckets.has_gpu_series,
        buckets.busy_gpus,
    from window_days
    inner join buckets
        on buckets.cluster_id = window_days.cluster_id
        and epoch_ms(buckets.bucket_at) // 86400000 = window_days.day_number
        and buckets.bucket_at >= window_days.window_start_at
        and buckets.bucket_at < window_days.window_end_at
),

bucket_stats as (
    select
        cluster_id,
        snapshot_at,
        count(*) as window_buckets,
        sum(hours) as evidence_hours,
        count(*) filter (where is_billed) as billed_buckets,
        count(*) filter (where not is_billed) as stopped_buckets,
        count(*) filter (where is_all_idle) as all_idle_buckets,
        count(*) filter (where is_billed and has_gpu_series) as series_buckets,
        quantile_cont(busy_gpus, getvariable('downsize_percentile') / 100)
            filter (where is_billed and has_gpu_series) as busy_gpus_percentile,
    from window_buckets
    group by cluster_id, snapshot_at
),

-- gaps and islands: consecutive all-idle billed hours share (hour number - row number)
idle_hours as (
    select
        cluster_id,
        snapshot_at,
        bucket_at,
        hours,
        cast(epoch(bucket_at) // 3600 as bigint) - row_number() over (
            partition by cluster_id, snapshot_at order by bucket_at
        ) as island,
    from window_buckets
    where is_all_idle
),

idle_runs as (
    select
        cluster_id,
        snapshot_at,
        island,
        sum(hours) as run_hours,
    from idle_hours
    group by cluster_id, snapshot_at, island
    having sum(hours) >= getvariable('schedule_min_idle_hours')
),

-- the hours each qualifying run holds of each UTC day
run_days as (
    select
        idle_hours.cluster_id,
        idle_hours.snapshot_at,
        idle_hours.island,
        cast(idle_hours.bucket_at as date) as day,
        sum(idle_hours.hours) as day_hours,
    from idle_hours
    inner join idle_runs
        on idle_runs.cluster_id = idle_hours.cluster_id
        and idle_runs.snapshot_at = idle_hours.snapshot_at
        and idle_runs.island = idle_hours.island
    group by idle_hours.cluster_id, idle_hours.snapshot_at, idle_hours.island, day
),

ranked_run_days as (
    select
        *,
        max(day_hours) over (partition by cluster_id, snapshot_at, island) as run_max_day_hours,
        row_number() over (
            partition by cluster_id, snapshot_at, island order by day_hours desc, day desc
        ) as day_rank,
    from run_days
),

-- a day counts when a qualifying run holds >= the minimum hours of it; a run that fills no
-- day that far (a night across midnight) counts once, on the day holding most of it (a tie:
-- the later day), never on every date it touches
counted_days as (
    select
        cluster_id,
        snapshot_at,
        count(distinct day) as idle_run_days,
    from ranked_run_days
    where day_hours >= getvariable('schedule_min_idle_hours')
        or (run_max_day_hours < getvariable('schedule_min_idle_hours') and day_rank = 1)
    group by cluster_id, snapshot_at
),

run_totals as (
    select
        cluster_id,
        snapshot_at,
        sum(run_hours) as idle_run_hours,
    from idle_runs
    group by cluster_id, snapshot_at
),

schedule_stats as (
    select
        run_totals.cluster_id,
        run_totals.snapshot_at,
        counted_days.idle_run_days,
        run_totals.idle_run_hours,
    from run_totals
    inner join counted_days
        on counted_days.cluster_id = run_totals.cluster_id
        and counted_days.snapshot_at = run_totals.snapshot_at
),

final as (
    select
        windows.cluster_id,
        windows.snapshot_at,
        windows.window_start_at,
        windows.window_end_at,
        windows.status,
        windows.status_message,
        windows.last_status_change_at,
        windows.gpu_count,
        windows.currency,
        windows.hourly_rate,
        windows.gpu_per_hour,
        windows.storage_per_hour,
        windows.components_per_hour,
        windows.bills_gpus,
        coalesce(bucket_stats.window_buckets, 0) as window_buckets,
        coalesce(bucket_stats.evidence_hours, 0) as evidence_hours,
        coalesce(bucket_stats.billed_buckets, 0) as billed_buckets,
        coalesce(bucket_stats.stopped_buckets, 0) as stopped_buckets,
        coalesce(bucket_stats.all_idle_buckets, 0) as all_idle_buckets,
        coalesce(bucket_stats.series_buckets, 0) as series_buckets,
        bucket_stats.busy_gpus_percentile,
        -- rounded first: a percentile of whole numbers should not become 3 through float noise
        cast(ceil(round(bucket_stats.busy_gpus_percentile, 9)) as integer) as busy_gpus_needed,
        coalesce(schedule_stats.idle_run_days, 0) as idle_run_days,
        coalesce(schedule_stats.idle_run_hours, 0) as idle_run_hours,
    from windows
    left join bucket_stats
        on bucket_stats.cluster_id = windows.cluster_id
        and bucket_stats.snapshot_at = windows.snapshot_at
    left join schedule_stats
        on schedule_stats.cluster_id = windows.cluster_id
        and schedule_stats.snapshot_at = windows.snapshot_at
)

select * from final

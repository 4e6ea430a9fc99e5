-- Every recommendation that holds at a snapshot, by DESIGN's rules over that snapshot's window
-- (lookback_days, 7 by default; schedule's day rule scales: >= schedule_min_days of every 7),
-- with its monthly savings (a month = hours_per_month hours) and its evidence.
with

windows as (
    select * from intermediate.recommendation_windows
),

rated as (
    select
        *,
        -- without a breakdown a stopped cluster's whole rate is storage
        case
            when components_per_hour is null and status = 'stopped' then hourly_rate
            else storage_per_hour
        end as storage_rate,
        cast(getvariable('hours_per_month') as integer) as month_hours,
        -- 5.0 reads as "5" in the evidence
        regexp_replace(cast(getvariable('idle_threshold_pct') as varchar), '\.0+$', '')
            as threshold_text,
    from windows
),

flagged as (
    select
        *,
        status = 'running'
        and billed_buckets >= getvariable('stop_idle_min_buckets')
        and 100.0 * all_idle_buckets >= getvariable('stop_idle_share_pct') * billed_buckets
            as is_stop_idle,
    from rated
),

stop_idle as (
    select
        cluster_id,
        snapshot_at,
        'stop_idle' as kind,
        cast((hourly_rate - storage_rate) * month_hours as decimal(18, 6)) as monthly_savings,
        'all ' || gpu_count || ' GPUs below ' || threshold_text || ' % in '
        || all_idle_buckets || ' of ' || billed_buckets || ' billed hours; stopping saves '
        || cast(round(hourly_rate - storage_rate, 4) as varchar) || ' ' || currency
        || '/h (storage keeps billing)' as reason,
    from flagged
    where is_stop_idle
),

downsize as (
    select
        cluster_id,
        snapshot_at,
        'downsize' as kind,
        cast(
            (gpu_count - greatest(1, busy_gpus_needed)) * gpu_per_hour / gpu_count * month_hours
            as decimal(18, 6)
        ) as monthly_savings,
        'P' || regexp_replace(cast(getvariable('downsize_percentile') as varchar), '\.0+$', '')
        || ' of busy GPUs (>= '
        || threshold_text || ' %) is ' || cast(round(busy_gpus_percentile, 2) as varchar)
        || ' over ' || series_buckets || ' billed hours: ' || greatest(1, busy_gpus_needed)
        || ' of ' || gpu_count || ' GPUs are enough' as reason,
    from flagged
    where series_buckets > 0
    and bills_gpus
    and status = 'running'
    -- a downsize that removes no GPU is not one
    and greatest(1, busy_gpus_needed) < gpu_count
),

schedule as (
    select
        cluster_id,
        snapshot_at,
        'schedule' as kind,
        cast(
            cast(idle_run_hours as decimal(18, 6)) * 30 * (hourly_rate - storage_rate)
            / getvariable('lookback_days')
            as decimal(18, 6)
        ) as monthly_savings,
        'whole cluster idle for ' || cast(getvariable('schedule_min_idle_hours') as integer)
        || ' h or more at a stretch on ' || idle_run_days || ' UTC days of the '
        || getvariable('lookback_days') || '-day window, '
        || cast(round(idle_run_hours / getvariable('lookback_days'), 1) as varchar)
        || ' h a day on average' as reason,
    from flagged
    where not is_stop_idle
    and status = 'running'
    and idle_run_days * 7 >= getvariable('schedule_min_days') * getvariable('lookback_days')
),

delete_storage as (
    select
        cluster_id,
        snapshot_at,
        'delete_storage' as kind,
        cast(storage_rate * month_hours as decimal(18, 6)) as monthly_savings,
        'stopped since '
        || coalesce(
            strftime(last_status_change_at, '%Y-%m-%d'),
            'before ' || strftime(window_start_at, '%Y-%m-%d')
        )
        || ', storage still billing ' || cast(round(storage_rate, 4) as varchar) || ' '
        || currency || '/h' as reason,
    from flagged
    where status = 'stopped'
    and billed_buckets = 0
    and storage_rate > 0
    -- every bucket of the window stopped; without metrics, stopped since before the window
    and (window_buckets > 0 or last_status_change_at <= window_start_at)
),

investigate_error as (
    select
        cluster_id,
        snapshot_at,
        'investigate_error' as kind,
        cast((hourly_rate - storage_rate) * month_hours as decimal(18, 6)) as monthly_savings,
        'status error' || coalesce(' (' || status_message || ')', '')
        || coalesce(' since ' || strftime(last_status_change_at, '%Y-%m-%d %H:%M'), '')
        || ', still billing ' || cast(round(hourly_rate, 4) as varchar) || ' ' || currency
        || '/h' as reason,
    from flagged
    where status = 'error'
    and hourly_rate > 0
),

unioned as (
    select * from stop_idle
    union all
    select * from downsize
    union all
    select * from schedule
    union all
    select * from delete_storage
    union all
    select * from investigate_error
),

final as (
    select
        unioned.*,
        flagged.currency,
        flagged.status,
        flagged.gpu_count,
        flagged.hourly_rate,
    from unioned
    inner join flagged
        on flagged.cluster_id = unioned.cluster_id
        and flagged.snapshot_at = unioned.snapshot_at
)

select * from final

-- One row per cluster per bucket (the newest value of each bucket), with its UTC day and length.
with

source as (
    select * from snap.metric_points
),

final as (
    select
        run_id,
        cluster_id,
        bucket_at,
        bucket_at + to_seconds(interval_seconds) as bucket_end_at,
        -- the bucket's midpoint decides which snapshot is nearest in time
        bucket_at + to_milliseconds(cast(interval_seconds as bigint) * 500) as bucket_mid_at,
        cast(bucket_at at time zone 'UTC' as date) as day,
        interval_seconds,
        -- exact for hourly buckets; 6 decimals for finer ones
        cast(round(interval_seconds / 3600.0, 6) as decimal(18, 6)) as hours,
        snapshot_at,
        status,
        coalesce(status, '') <> 'stopped' as is_billed,
        gpu_utilization,
        gpu_memory_utilization,
        cast(cost as decimal(18, 6)) as cost,
        currency,
        gpu_series_count,
    from source
)

select * from final

-- The utilization behind each cluster's heatmap: every bucket of the 168 hours before the hour
-- of its latest snapshot, per GPU where the per-GPU series exists (is_cluster_wide false) and
-- the cluster's average (is_cluster_wide true, gpu_id null) for every bucket. hour: 0-167 from
-- window_start_at.
with

snapshots as (
    select * from staging.cluster_snapshots
),

points as (
    select * from staging.metric_points
),

gpu_points as (
    select * from staging.gpu_metric_points
),

windows as (
    select
        cluster_id,
        date_trunc('hour', max(snapshot_at)) - interval 168 hour as window_start_at,
    from snapshots
    group by cluster_id
),

per_gpu as (
    select
        gpu_points.cluster_id,
        gpu_points.gpu_id,
        gpu_points.bucket_at,
        windows.window_start_at,
        gpu_points.utilization,
        false as is_cluster_wide,
    from gpu_points
    inner join windows on windows.cluster_id = gpu_points.cluster_id
    where gpu_points.bucket_at >= windows.window_start_at
    and gpu_points.bucket_at < windows.window_start_at + interval 168 hour
),

cluster_wide as (
    select
        points.cluster_id,
        cast(null as varchar) as gpu_id,
        points.bucket_at,
        windows.window_start_at,
        points.gpu_utilization as utilization,
        true as is_cluster_wide,
    from points
    inner join windows on windows.cluster_id = points.cluster_id
    where points.bucket_at >= windows.window_start_at
    and points.bucket_at < windows.window_start_at + interval 168 hour
),

combined as (
    select * from per_gpu
    union all
    select * from cluster_wide
),

final as (
    select
        cluster_id,
        gpu_id,
        bucket_at,
        window_start_at,
        cast(floor((epoch(bucket_at) - epoch(window_start_at)) / 3600) as integer) as hour,
        utilization,
        is_cluster_wide,
    from combined
)

select * from final

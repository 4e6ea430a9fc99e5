-- One row per GPU per bucket, where the provider sends the per-GPU series.
with

source as (
    select * from snap.gpu_metric_points
),

final as (
    select
        cluster_id,
        bucket_at,
        gpu_id,
        utilization,
        memory_used_gb,
        power_draw_w,
    from source
)

select * from final

-- Per-GPU readings at the snapshot instant (metrics.current.gpus).
with

source as (
    select * from snap.gpu_current
),

final as (
    select
        cluster_id,
        snapshot_at,
        gpu_id,
        utilization,
        memory_used_gb,
        memory_total_gb,
        temperature_c,
        power_draw_w,
    from source
)

select * from final

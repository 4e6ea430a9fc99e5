-- incremental: per cluster where day >= from_day
-- Idle GPU waste per GPU per UTC day, for clusters that send the per-GPU series.
with

-- an incremental build recomputes the days of its scope
gpu_buckets as (
    select *
    from intermediate.gpu_buckets
    where bucket_at >= getvariable('build_from_day_at')
),

final as (
    select
        cluster_id,
        gpu_id,
        day,
        currency,
        cast(sum(gpu_hours) as decimal(18, 6)) as gpu_hours,
        cast(sum(idle_gpu_hours) as decimal(18, 6)) as idle_gpu_hours,
        cast(sum(idle_cost) as decimal(18, 6)) as idle_cost,
        cast(sum(unused_capacity_cost) as decimal(18, 6)) as unused_capacity_cost,
        cast(
            sum(cast(utilization as decimal(18, 6)) * gpu_hours) / nullif(sum(gpu_hours), 0)
            as double
        ) as avg_gpu_utilization,
        cast(sum(case when is_memory_held then gpu_hours else 0 end) as decimal(18, 6))
            as memory_held_idle_gpu_hours,
        max(memory_used_gb) filter (where is_idle) as max_idle_memory_used_gb,
    from gpu_buckets
    group by cluster_id, gpu_id, day, currency
)

select * from final

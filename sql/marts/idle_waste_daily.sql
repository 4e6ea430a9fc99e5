-- incremental: per cluster where day >= from_day
-- Idle GPU waste per cluster per UTC day (DESIGN "Definitions": idle cost, unused capacity).
with

-- an incremental build recomputes the days of its scope
cluster_daily as (
    select *
    from intermediate.cluster_daily
    where day >= cast(getvariable('build_from_day_at') as date)
),

final as (
    select
        cluster_id,
        day,
        currency,
        cast(gpu_hours as decimal(18, 6)) as gpu_hours,
        cast(idle_gpu_hours as decimal(18, 6)) as idle_gpu_hours,
        cast(idle_cost as decimal(18, 6)) as idle_cost,
        cast(unused_capacity_cost as decimal(18, 6)) as unused_capacity_cost,
        avg_gpu_utilization,
        per_gpu,
        cast(memory_held_idle_gpu_hours as decimal(18, 6)) as memory_held_idle_gpu_hours,
    from cluster_daily
)

select * from final

-- incremental: fleet where day >= from_day
-- The whole fleet per UTC day and currency (currencies are never summed together).
with

-- an incremental build recomputes the days of its scope
cluster_daily as (
    select *
    from intermediate.cluster_daily
    where day >= cast(getvariable('build_from_day_at') as date)
),

final as (
    select
        day,
        currency,
        cast(sum(cost) as decimal(18, 6)) as cost,
        cast(sum(gpu_hours) as decimal(18, 6)) as gpu_hours,
        cast(sum(idle_gpu_hours) as decimal(18, 6)) as idle_gpu_hours,
        cast(sum(idle_cost) as decimal(18, 6)) as idle_cost,
    from cluster_daily
    group by day, currency
)

select * from final

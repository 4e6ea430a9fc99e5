-- incremental: day
-- The whole fleet per UTC day and currency (currencies are never summed together).
with

cluster_daily as (
    select * from intermediate.cluster_daily
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

-- One row per cluster per UTC day (and currency): spend and GPU waste, summed from buckets.
with

buckets as (
    select * from intermediate.buckets
),

final as (
    select
        cluster_id,
        day,
        currency,
        sum(cost) as cost,
        sum(gpu_hours) as gpu_hours,
        sum(idle_gpu_hours) as idle_gpu_hours,
        sum(idle_cost) as idle_cost,
        sum(unused_capacity_cost) as unused_capacity_cost,
        cast(sum(utilization_gpu_hours) / nullif(sum(gpu_hours), 0) as double)
            as avg_gpu_utilization,
        coalesce(bool_and(has_gpu_series) filter (where is_billed), false) as per_gpu,
        sum(memory_held_idle_gpu_hours) as memory_held_idle_gpu_hours,
        bool_or(is_cost_estimated) as has_estimated_cost,
        count(*) as buckets,
    from buckets
    group by cluster_id, day, currency
)

select * from final

-- materialized: table
-- incremental: per cluster where day >= from_day
-- One row per cluster per UTC day (and currency): spend and GPU waste, summed from buckets; the
-- billed hours, GPUs and cost per billed GPU-hour from which marts.spend_anomalies reads a day's
-- cause (intermediate.cluster_day_changes); the day's first bucket and last bucket end, from
-- which it reads the complete days. Kept night by night: the marts rebuilt whole every night
-- (spend_anomalies) read these rows, not every bucket of the history (a view, it aggregated 89 M
-- buckets twice at 10,000 clusters x 365 days, and failed the nightly build's memory limit).
with

-- an incremental build recomputes the whole days of its scope (a batch, its clusters only)
buckets as (
    select *
    from intermediate.buckets
    where day >= cast(getvariable('build_from_day_at') as date)
    -- the scope's clusters as a range too: a plain filter skips the row groups of the others
    -- (a batch of a full refresh otherwise read every bucket written so far)
    and cluster_id between (select min(cluster_id) from _gpucost_scope)
        and (select max(cluster_id) from _gpucost_scope)
    and exists (
        select 1 from _gpucost_scope as scope
        where scope.cluster_id = buckets.cluster_id
        and buckets.day >= scope.from_day
    )
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
        sum(hours) filter (where is_billed) as billed_hours,
        max(gpu_count) filter (where is_billed) as billed_gpus,
        sum(cost) filter (where is_billed)
            / nullif(sum(gpu_count * hours) filter (where is_billed), 0) as cost_per_gpu_hour,
        min(bucket_at) as first_bucket_at,
        max(bucket_end_at) as last_bucket_end_at,
    from buckets
    group by cluster_id, day, currency
)

select * from final

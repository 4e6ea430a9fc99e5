-- Per cluster bucket, what its per-GPU series says: GPUs reported, idle, busy, idle while
-- holding memory, and the sums that give unused capacity and mean utilization.
with

gpu_points as (
    select * from staging.gpu_metric_points
),

final as (
    select
        cluster_id,
        bucket_at,
        count(*) as series_gpus,
        count(*) filter (
            where utilization < getvariable('idle_threshold_pct')
        ) as idle_gpus,
        count(*) filter (
            where utilization >= getvariable('idle_threshold_pct')
        ) as busy_gpus,
        count(*) filter (
            where utilization < getvariable('idle_threshold_pct')
            and memory_used_gb >= getvariable('memory_held_gb')
        ) as memory_held_idle_gpus,
        sum(1 - utilization / 100) as unused_gpu_share,
        -- utilizations carry two decimals: summed as DECIMAL the result does not depend on
        -- the order DuckDB's threads add them in
        sum(cast(utilization as decimal(18, 6))) as utilization_sum,
    from gpu_points
    group by cluster_id, bucket_at
)

select * from final

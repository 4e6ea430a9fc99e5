-- One row per GPU per billed bucket where the per-GPU series exists, priced like its bucket:
-- each GPU carries an equal part of the bucket's GPU cost.
with

gpu_points as (
    select * from staging.gpu_metric_points
),

buckets as (
    select * from intermediate.buckets
),

joined as (
    select
        buckets.cluster_id,
        gpu_points.gpu_id,
        buckets.bucket_at,
        buckets.day,
        buckets.currency,
        buckets.hours,
        gpu_points.utilization,
        gpu_points.memory_used_gb,
        cast(buckets.gpu_cost / buckets.gpu_count as decimal(38, 12)) as gpu_cost,
        gpu_points.utilization < getvariable('idle_threshold_pct') as is_idle,
    from buckets
    inner join gpu_points
        on gpu_points.cluster_id = buckets.cluster_id
        and gpu_points.bucket_at = buckets.bucket_at
    where buckets.is_billed and buckets.has_gpu_series
),

final as (
    select
        cluster_id,
        gpu_id,
        bucket_at,
        day,
        currency,
        hours as gpu_hours,
        utilization,
        memory_used_gb,
        coalesce(is_idle, false) as is_idle,
        coalesce(is_idle and memory_used_gb >= getvariable('memory_held_gb'), false)
            as is_memory_held,
        case when is_idle then hours else 0 end as idle_gpu_hours,
        case when is_idle then gpu_cost else 0 end as idle_cost,
        cast(gpu_cost * coalesce(1 - utilization / 100, 0) as decimal(38, 12))
            as unused_capacity_cost,
    from joined
)

select * from final

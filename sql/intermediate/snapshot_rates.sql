-- One row per cluster per snapshot with the rates that price its buckets: the hourly rate, the
-- GPU and storage components, and whether GPUs were billing at that instant.
with

snapshots as (
    select * from staging.cluster_snapshots
),

components as (
    select * from staging.cost_components
),

breakdown as (
    select
        cluster_id,
        snapshot_at,
        sum(cost_per_hour) as components_per_hour,
        sum(case when component = 'gpu' then cost_per_hour else 0 end) as gpu_per_hour,
        sum(case when component = 'storage' then cost_per_hour else 0 end) as storage_per_hour,
    from components
    group by cluster_id, snapshot_at
),

final as (
    select
        snapshots.cluster_id,
        snapshots.snapshot_at,
        epoch_ms(snapshots.snapshot_at) as snapshot_ms,
        snapshots.run_id,
        snapshots.status,
        snapshots.status_message,
        snapshots.last_status_change_at,
        snapshots.gpu_count,
        snapshots.currency,
        snapshots.hourly_rate,
        snapshots.total_cost_to_date,
        breakdown.components_per_hour,
        breakdown.gpu_per_hour,
        coalesce(breakdown.storage_per_hour, 0) as storage_per_hour,
        -- a stopped snapshot bills no GPU: it cannot price a running bucket
        coalesce(breakdown.gpu_per_hour > 0, false) and snapshots.gpu_count > 0 as bills_gpus,
    from snapshots
    left join breakdown
        on breakdown.cluster_id = snapshots.cluster_id
        and breakdown.snapshot_at = snapshots.snapshot_at
)

select * from final

-- One row per projection a snapshot made (daily 24 h, weekly 168 h, monthly 720 h).
with

source as (
    select * from snap.projections
),

final as (
    select
        cluster_id,
        snapshot_at as projected_at,
        horizon,
        horizon_hours,
        -- buckets are hourly and totals count complete buckets: a horizon covers the buckets
        -- starting in [floor_hour(projected_at), + horizon_hours)
        date_trunc('hour', snapshot_at) as horizon_start_at,
        date_trunc('hour', snapshot_at) + to_hours(horizon_hours) as horizon_end_at,
        snapshot_at + to_hours(horizon_hours) as elapsed_at,
        cast(projected_cost as decimal(18, 6)) as projected_cost,
        currency,
        basis,
    from source
)

select * from final

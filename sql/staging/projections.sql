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
        snapshot_at + to_hours(horizon_hours) as horizon_end_at,
        cast(projected_cost as decimal(18, 6)) as projected_cost,
        currency,
        basis,
    from source
)

select * from final

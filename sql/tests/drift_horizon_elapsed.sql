-- Every scored projection's horizon has fully elapsed by the newest snapshot.
with

drift as (
    select * from marts.projection_drift
),

latest as (
    select max(snapshot_at) as latest_snapshot_at from snap.cluster_snapshots
),

final as (
    select drift.*, latest.latest_snapshot_at
    from drift
    cross join latest
    where drift.projected_at + to_hours(
        case drift.horizon when 'daily' then 24 when 'weekly' then 168 else 720 end
    ) > latest.latest_snapshot_at
)

select * from final

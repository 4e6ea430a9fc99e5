-- The alerts still active (no resolved_at) at each cluster's latest snapshot, for the clusters
-- snapshotted within 36 hours of the newest snapshot (older ones are gone or failing: their
-- alerts would be stale).
with

alerts as (
    select * from staging.alerts
),

snapshots as (
    select * from staging.cluster_snapshots
),

latest as (
    select cluster_id, max(snapshot_at) as snapshot_at, arg_max(name, snapshot_at) as name,
    from snapshots
    group by cluster_id
),

newest as (
    select max(snapshot_at) as newest_at from latest
),

final as (
    select
        alerts.cluster_id,
        latest.name,
        alerts.snapshot_at,
        alerts.alert_id,
        alerts.severity,
        alerts.metric,
        alerts.condition,
        alerts.threshold,
        alerts.current_value,
        alerts.duration,
        alerts.triggered_at,
        alerts.message,
    from alerts
    inner join latest
        on latest.cluster_id = alerts.cluster_id
        and latest.snapshot_at = alerts.snapshot_at
    cross join newest
    where alerts.is_active
    and latest.snapshot_at >= newest.newest_at - interval 36 hour
)

select * from final

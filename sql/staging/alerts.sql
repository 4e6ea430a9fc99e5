-- One row per alert a snapshot carried (active or resolved).
with

source as (
    select * from snap.alerts
),

final as (
    select
        cluster_id,
        snapshot_at,
        alert_id,
        severity,
        metric,
        condition,
        threshold,
        current_value,
        duration,
        triggered_at,
        resolved_at,
        resolved_at is null as is_active,
        message,
    from source
)

select * from final

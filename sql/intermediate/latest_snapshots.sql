-- One row per cluster: its latest snapshot (the instant `cluster_presence` names), every column
-- of staging.cluster_snapshots. The one definition of "as the latest snapshot shows it".
with

snapshots as (
    select * from staging.cluster_snapshots
),

presence as (
    select * from intermediate.cluster_presence
),

final as (
    select snapshots.*
    from snapshots
    inner join presence
        on presence.cluster_id = snapshots.cluster_id
        and presence.last_snapshot_at = snapshots.snapshot_at
)

select * from final

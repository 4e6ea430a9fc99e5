-- One row per cluster: the project its latest snapshot names (a cluster's whole history is
-- charged to it), that project's owner, and its cost center from `[cost_centers]`
-- ('unmapped' when the configuration does not map the project).
with

snapshots as (
    select * from staging.cluster_snapshots
),

presence as (
    select * from intermediate.cluster_presence
),

cost_centers as (
    select * from staging.cost_centers
),

latest as (
    select snapshots.*
    from snapshots
    inner join presence
        on presence.cluster_id = snapshots.cluster_id
        and presence.last_snapshot_at = snapshots.snapshot_at
),

final as (
    select
        latest.cluster_id,
        latest.snapshot_at as last_snapshot_at,
        latest.project_id,
        latest.project_name,
        latest.owner_id,
        latest.owner_email,
        coalesce(cost_centers.cost_center, 'unmapped') as cost_center,
        cost_centers.cost_center is null as is_unmapped,
    from latest
    left join cost_centers on cost_centers.project_id = latest.project_id
)

select * from final

-- One row per cluster: the project its latest snapshot names (a cluster's whole history is
-- charged to it), that project's owner, and its cost center from `[cost_centers]`
-- ('unmapped' when the configuration does not map the project).
with

latest as (
    select * from intermediate.latest_snapshots
),

cost_centers as (
    select * from staging.cost_centers
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

-- Each snapshot's project and owner (snap.cluster_snapshots' project_info), for routing
-- notifications and matching [[suppress]] entries by project.
with

source as (
    select * from snap.cluster_snapshots
),

final as (
    select
        cluster_id,
        snapshot_at,
        project_id,
        project_name,
        owner_id,
    from source
)

select * from final

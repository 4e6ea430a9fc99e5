-- One row per project: its name, owner (who finance and notifications write to) and cost
-- center. The owner is the one most of the project's clusters name at their latest snapshot
-- (a tie: the smallest owner_id), so one cluster with a stale owner does not move it.
with

cluster_projects as (
    select * from intermediate.cluster_projects
),

owners as (
    select
        project_id,
        owner_id,
        owner_email,
        count(*) as clusters,
    from cluster_projects
    group by project_id, owner_id, owner_email
),

ranked as (
    select
        *,
        row_number() over (
            partition by project_id order by clusters desc, owner_id nulls last, owner_email
        ) as owner_rank,
    from owners
),

projects as (
    select
        project_id,
        -- the name most recently seen wins a rename
        arg_max(project_name, last_snapshot_at) as project_name,
        any_value(cost_center) as cost_center,
        bool_or(is_unmapped) as is_unmapped,
        count(*) as clusters,
    from cluster_projects
    group by project_id
),

final as (
    select
        projects.project_id,
        projects.project_name,
        ranked.owner_id,
        ranked.owner_email,
        projects.cost_center,
        projects.is_unmapped,
        projects.clusters,
    from projects
    left join ranked
        on ranked.project_id is not distinct from projects.project_id
        and ranked.owner_rank = 1
)

select * from final

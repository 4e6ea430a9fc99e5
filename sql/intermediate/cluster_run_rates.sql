-- One row per cluster that exists at its latest snapshot (not since deleted): its project, cost
-- center and currency, and its current hourly rate there (storage only when stopped), what the
-- run-rate forecast extends to the month's end.
with

presence as (
    select * from intermediate.cluster_presence
),

rates as (
    select * from intermediate.snapshot_rates
),

cluster_projects as (
    select * from intermediate.cluster_projects
),

final as (
    select
        presence.cluster_id,
        cluster_projects.project_id,
        cluster_projects.cost_center,
        rates.currency,
        rates.status,
        presence.last_snapshot_at,
        case
            when rates.status = 'stopped' then rates.storage_per_hour
            else rates.hourly_rate
        end as run_rate_per_hour,
    from presence
    inner join rates
        on rates.cluster_id = presence.cluster_id
        and rates.snapshot_at = presence.last_snapshot_at
    left join cluster_projects on cluster_projects.cluster_id = presence.cluster_id
    where not presence.is_deleted
)

select * from final

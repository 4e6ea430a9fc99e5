-- One row per cluster as its latest snapshot shows it; status `deleted` once a later run no
-- longer sees it. health is the worst of the four health checks.
with

latest as (
    select * from intermediate.latest_snapshots
),

presence as (
    select * from intermediate.cluster_presence
),


final as (
    select
        latest.cluster_id,
        latest.name,
        case when presence.is_deleted then 'deleted' else latest.status end as status,
        latest.gpu_type,
        latest.gpu_count,
        latest.region,
        latest.project_name,
        latest.hourly_rate,
        latest.currency,
        case
            when 'unhealthy' in (
                latest.gpu_health, latest.storage_health, latest.network_health,
                latest.docker_health
            ) then 'unhealthy'
            when 'degraded' in (
                latest.gpu_health, latest.storage_health, latest.network_health,
                latest.docker_health
            ) then 'degraded'
            when latest.gpu_health is null and latest.storage_health is null
                and latest.network_health is null and latest.docker_health is null then null
            else 'healthy'
        end as health,
        latest.snapshot_at as last_snapshot_at,
    from latest
    inner join presence on presence.cluster_id = latest.cluster_id
)

select * from final

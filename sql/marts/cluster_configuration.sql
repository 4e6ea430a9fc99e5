-- One row per cluster: its configuration as its latest snapshot shows it (the report's cluster
-- sections).
with

snapshots as (
    select * from staging.cluster_snapshots
),

ranked as (
    select
        *,
        row_number() over (partition by cluster_id order by snapshot_at desc) as recency,
    from snapshots
),

final as (
    select
        cluster_id,
        snapshot_at,
        name,
        status,
        gpu_type,
        gpu_count,
        cpu_cores,
        memory_gb,
        storage_gb,
        storage_type,
        region,
        availability_zone,
        project_id,
        project_name,
        owner_id,
        owner_email,
        template_name,
        docker_image,
        cuda_version,
        gpu_health,
        storage_health,
        network_health,
        docker_health,
        currency,
        hourly_rate,
    from ranked
    where recency = 1
)

select * from final

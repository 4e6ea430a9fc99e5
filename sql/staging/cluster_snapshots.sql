-- One row per cluster per snapshot (snap.cluster_snapshots), typed for the models.
-- DuckDB specifics stay here: the UTC day of a TIMESTAMPTZ.
with

source as (
    select * from snap.cluster_snapshots
),

final as (
    select
        run_id,
        cluster_id,
        snapshot_at,
        cast(snapshot_at at time zone 'UTC' as date) as snapshot_day,
        name,
        status,
        status_message,
        last_status_change as last_status_change_at,
        created_at,
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
        cast(hourly_rate as decimal(18, 6)) as hourly_rate,
        cast(total_cost_to_date as decimal(18, 6)) as total_cost_to_date,
        interval_seconds,
        has_metrics,
        has_gpu_series,
        has_cost_breakdown,
    from source
)

select * from final

-- Money and hours never go below zero (drift and realized savings may: they are differences).
with

negatives as (
    select 'idle_waste_daily' as mart, cluster_id as id, cast(day as varchar) as at
    from marts.idle_waste_daily
    where gpu_hours < 0 or idle_gpu_hours < 0 or idle_cost < 0 or unused_capacity_cost < 0
    or memory_held_idle_gpu_hours < 0
    union all
    select 'idle_waste_gpu_daily', cluster_id || '/' || gpu_id, cast(day as varchar)
    from marts.idle_waste_gpu_daily
    where gpu_hours < 0 or idle_gpu_hours < 0 or idle_cost < 0 or unused_capacity_cost < 0
    union all
    select 'fleet_daily', currency, cast(day as varchar)
    from marts.fleet_daily
    where cost < 0 or gpu_hours < 0 or idle_gpu_hours < 0 or idle_cost < 0
    union all
    select 'projection_drift', cluster_id, cast(projected_at as varchar)
    from marts.projection_drift
    where projected_cost < 0 or actual_cost < 0
    union all
    select 'recommendations', cluster_id || '/' || kind, cast(last_seen_at as varchar)
    from marts.recommendations
    where monthly_savings < 0
    union all
    select 'clusters', cluster_id, cast(last_snapshot_at as varchar)
    from marts.clusters
    where hourly_rate < 0 or gpu_count < 0
)

select * from negatives

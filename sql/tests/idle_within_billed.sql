-- Idle GPU-hours never exceed billed GPU-hours, memory-held idle hours never exceed idle hours.
with

violations as (
    select 'idle_waste_daily' as mart, cluster_id as id, day,
        gpu_hours, idle_gpu_hours, memory_held_idle_gpu_hours
    from marts.idle_waste_daily
    where idle_gpu_hours > gpu_hours
    or memory_held_idle_gpu_hours > idle_gpu_hours
    union all
    select 'idle_waste_gpu_daily', cluster_id || '/' || gpu_id, day,
        gpu_hours, idle_gpu_hours, memory_held_idle_gpu_hours
    from marts.idle_waste_gpu_daily
    where idle_gpu_hours > gpu_hours
    or memory_held_idle_gpu_hours > idle_gpu_hours
    union all
    select 'fleet_daily', currency, day, gpu_hours, idle_gpu_hours, null
    from marts.fleet_daily
    where idle_gpu_hours > gpu_hours
)

select * from violations

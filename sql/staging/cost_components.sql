-- One row per cost component of a snapshot's breakdown (gpu, cpu, memory, storage, network...).
with

source as (
    select * from snap.cost_components
),

final as (
    select
        cluster_id,
        snapshot_at,
        lower(component) as component,
        cast(cost_per_hour as decimal(18, 6)) as cost_per_hour,
        currency,
    from source
)

select * from final

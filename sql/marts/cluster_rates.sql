-- One row per cluster and cost component of its latest snapshot's breakdown: the rate now.
with

snapshots as (
    select * from staging.cluster_snapshots
),

components as (
    select * from staging.cost_components
),

latest as (
    select cluster_id, max(snapshot_at) as snapshot_at,
    from snapshots
    group by cluster_id
),

final as (
    select
        components.cluster_id,
        components.snapshot_at,
        components.component,
        components.cost_per_hour,
        components.currency,
    from components
    inner join latest
        on latest.cluster_id = components.cluster_id
        and latest.snapshot_at = components.snapshot_at
)

select * from final

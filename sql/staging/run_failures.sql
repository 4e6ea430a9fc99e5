-- Clusters a run listed but did not snapshot, and why (failed, gone, skipped).
with

source as (
    select * from meta.run_failures
),

final as (
    select
        run_id,
        cluster_id,
        stage,
        outcome,
        reason,
    from source
    where cluster_id is not null
)

select * from final

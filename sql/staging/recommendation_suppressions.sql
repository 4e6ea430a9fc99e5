-- The configuration's [[suppress]] entries, as the last `gpucost build`, `run`, `recs` or
-- `notify` synchronized them.
with

source as (
    select * from meta.recommendation_suppressions
),

final as (
    select
        position,
        cluster_id,
        project,
        kind,
        reason,
        until_day,
    from source
)

select * from final

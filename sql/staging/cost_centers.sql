-- The `[cost_centers]` configuration (meta.cost_centers, written from the config at every build):
-- one row per mapped project.
with

source as (
    select * from meta.cost_centers
),

final as (
    select
        project_id,
        cost_center,
    from source
)

select * from final

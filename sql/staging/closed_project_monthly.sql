-- The project_monthly rows of each closed month as they were when `gpucost close` froze them.
with

source as (
    select * from meta.closed_project_monthly
),

final as (
    select * from source
)

select * from final

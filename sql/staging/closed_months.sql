-- The months `gpucost close` froze (meta.closed_months), by their first day.
with

source as (
    select * from meta.closed_months
),

final as (
    select
        month,
        closed_at,
    from source
)

select * from final

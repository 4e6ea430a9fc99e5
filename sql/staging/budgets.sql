-- The `[[budgets]]` configuration (meta.budgets, written from the config at every build).
with

source as (
    select * from meta.budgets
),

final as (
    select
        budget_name,
        scope,
        scope_id,
        cast(amount as decimal(18, 6)) as amount,
        currency,
    from source
)

select * from final

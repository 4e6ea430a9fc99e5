-- The FOCUS rows (marts.cluster_cost_daily) add up to marts.fleet_daily per day and currency to
-- the cent. Returns each day and currency where they do not.
with

parts as (
    select day, currency, sum(cost) as cost,
    from marts.cluster_cost_daily
    group by day, currency
),

fleet as (
    select * from marts.fleet_daily
),

final as (
    select
        coalesce(parts.day, fleet.day) as day,
        coalesce(parts.currency, fleet.currency) as currency,
        parts.cost as parts_cost,
        fleet.cost as fleet_cost,
    from parts
    full outer join fleet on fleet.day = parts.day and fleet.currency = parts.currency
    where abs(coalesce(parts.cost, 0) - coalesce(fleet.cost, 0)) >= 0.01
)

select * from final

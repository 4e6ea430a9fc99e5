-- The projects add up to marts.fleet_daily to the cent: per open month and currency, and over
-- all months per currency once closed months' adjustments are counted (cost + adjustment_cost).
-- Returns each month (null: all months) and currency where they do not.
with

projects as (
    select * from marts.project_monthly
),

fleet as (
    select
        cast(date_trunc('month', day) as date) as month,
        currency,
        sum(cost) as cost,
    from marts.fleet_daily
    group by all
),

per_month as (
    select month, currency, sum(cost) as cost,
    from projects
    where not is_closed
    group by all
),

month_gaps as (
    select
        coalesce(fleet.month, per_month.month) as month,
        coalesce(fleet.currency, per_month.currency) as currency,
        fleet.cost as fleet_cost,
        per_month.cost as projects_cost,
    from fleet
    full outer join per_month
        on per_month.month = fleet.month and per_month.currency = fleet.currency
    where coalesce(fleet.month, per_month.month)
        not in (select month from projects where is_closed)
    and abs(coalesce(fleet.cost, 0) - coalesce(per_month.cost, 0)) >= 0.01
),

total_gaps as (
    select
        cast(null as date) as month,
        coalesce(f.currency, p.currency) as currency,
        f.cost as fleet_cost,
        p.cost as projects_cost,
    from (select currency, sum(cost) as cost from fleet group by all) as f
    full outer join (
        select currency, sum(cost + adjustment_cost) as cost from projects group by all
    ) as p on p.currency = f.currency
    where abs(coalesce(f.cost, 0) - coalesce(p.cost, 0)) >= 0.01
),

final as (
    select * from month_gaps
    union all
    select * from total_gaps
)

select * from final

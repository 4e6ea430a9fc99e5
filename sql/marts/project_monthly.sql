-- Chargeback: one row per UTC month (its first day), project and currency. An open month is
-- computed from the buckets as stored now; a closed month (`gpucost close`) shows the rows it
-- froze. What the provider revised in closed months since they closed is booked, per project
-- and currency, in `adjustment_cost` of the month after the latest closed one (the first open
-- month), so that over all months cost + adjustment_cost adds up to the fleet's spend.
-- Savings: open recommendations by the month they were last seen (monthly_savings), resolved
-- ones by the month they were last open (realized_monthly_savings).
with

live as (
    select * from intermediate.project_monthly_live
),

projects as (
    select * from marts.projects
),

cluster_projects as (
    select * from intermediate.cluster_projects
),

recommendations as (
    select * from marts.recommendations
),

closed as (
    select * from staging.closed_months
),

frozen as (
    select * from staging.closed_project_monthly
),

adjustment_month as (
    select cast(max(month) + interval 1 month as date) as month
    from closed
    having count(*) > 0
),

-- what the closed months hold now against what they held (and booked) when they closed
closed_live as (
    select project_id, currency, sum(cost) as cost
    from live
    where month in (select month from closed)
    group by all
),

closed_frozen as (
    select project_id, currency, sum(cost + coalesce(adjustment_cost, 0)) as cost
    from frozen
    group by all
),

adjustments as (
    select
        adjustment_month.month,
        coalesce(closed_live.project_id, closed_frozen.project_id) as project_id,
        coalesce(closed_live.currency, closed_frozen.currency) as currency,
        coalesce(closed_live.cost, 0) - coalesce(closed_frozen.cost, 0) as adjustment_cost,
    from closed_live
    full outer join closed_frozen
        on closed_frozen.project_id is not distinct from closed_live.project_id
        and closed_frozen.currency = closed_live.currency
    cross join adjustment_month
    where coalesce(closed_live.cost, 0) <> coalesce(closed_frozen.cost, 0)
),

open_live as (
    select * from live
    where month not in (select month from closed)
),

savings as (
    select
        cast(date_trunc('month', recommendations.last_seen_at) as date) as month,
        cluster_projects.project_id,
        recommendations.currency,
        sum(recommendations.monthly_savings) filter (where recommendations.status = 'open')
            as open_monthly_savings,
        sum(recommendations.realized_monthly_savings)
            filter (where recommendations.status = 'resolved') as realized_monthly_savings,
    from recommendations
    left join cluster_projects on cluster_projects.cluster_id = recommendations.cluster_id
    group by all
),

open_rows as (
    select
        coalesce(open_live.month, adjustments.month) as month,
        coalesce(open_live.project_id, adjustments.project_id) as project_id,
        coalesce(open_live.currency, adjustments.currency) as currency,
        projects.project_name,
        projects.owner_id,
        coalesce(projects.cost_center, 'unmapped') as cost_center,
        cast(coalesce(open_live.cost, 0) as decimal(18, 6)) as cost,
        cast(coalesce(open_live.gpu_cost, 0) as decimal(18, 6)) as gpu_cost,
        cast(coalesce(open_live.gpu_hours, 0) as decimal(18, 6)) as gpu_hours,
        cast(coalesce(open_live.idle_gpu_hours, 0) as decimal(18, 6)) as idle_gpu_hours,
        cast(coalesce(open_live.idle_cost, 0) as decimal(18, 6)) as idle_cost,
        cast(coalesce(open_live.unused_capacity_cost, 0) as decimal(18, 6))
            as unused_capacity_cost,
        cast(coalesce(savings.open_monthly_savings, 0) as decimal(18, 6))
            as open_monthly_savings,
        cast(coalesce(savings.realized_monthly_savings, 0) as decimal(18, 6))
            as realized_monthly_savings,
        open_live.first_data_at,
        open_live.last_data_at,
        false as is_closed,
        cast(coalesce(adjustments.adjustment_cost, 0) as decimal(18, 6)) as adjustment_cost,
    from open_live
    full outer join adjustments
        on adjustments.month = open_live.month
        and adjustments.project_id is not distinct from open_live.project_id
        and adjustments.currency = open_live.currency
    left join projects
        on projects.project_id is not distinct from coalesce(
            open_live.project_id, adjustments.project_id
        )
    left join savings
        on savings.month = coalesce(open_live.month, adjustments.month)
        and savings.project_id is not distinct from coalesce(
            open_live.project_id, adjustments.project_id
        )
        and savings.currency = coalesce(open_live.currency, adjustments.currency)
),

closed_rows as (
    select
        month,
        project_id,
        currency,
        project_name,
        owner_id,
        cost_center,
        cost,
        gpu_cost,
        gpu_hours,
        idle_gpu_hours,
        idle_cost,
        unused_capacity_cost,
        open_monthly_savings,
        realized_monthly_savings,
        first_data_at,
        last_data_at,
        true as is_closed,
        coalesce(adjustment_cost, 0) as adjustment_cost,
    from frozen
),

final as (
    select * from open_rows
    union all
    select * from closed_rows
)

select * from final

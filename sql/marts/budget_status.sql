-- One row per budget and month (every month with spend in the budget's currency): what was
-- billed so far, the run-rate forecast of the month's end and the status.
-- actual_to_date = the scope's project_monthly cost + adjustment_cost in the month.
-- forecast_month_end = actual_to_date + for each cluster in scope existing at its latest
-- snapshot, its hourly rate there (storage only when stopped) x the hours from that snapshot to
-- the month's end (none once the month has ended). status: `over` when actual_to_date >=
-- amount, else `at_risk` when forecast_month_end >= amount, else `ok`.
with

budgets as (
    select * from staging.budgets
),

project_monthly as (
    select * from marts.project_monthly
),

run_rates as (
    select * from intermediate.cluster_run_rates
),

months as (
    select distinct month, currency from project_monthly
),

budget_months as (
    select
        budgets.*,
        months.month,
        cast(months.month + interval 1 month as timestamptz) as month_end_at,
    from budgets
    inner join months on months.currency = budgets.currency
),

actuals as (
    select
        budget_months.budget_name,
        budget_months.month,
        sum(project_monthly.cost + project_monthly.adjustment_cost) as actual_to_date,
    from budget_months
    inner join project_monthly
        on project_monthly.month = budget_months.month
        and project_monthly.currency = budget_months.currency
        and (
            budget_months.scope = 'fleet'
            or (budget_months.scope = 'project'
                and project_monthly.project_id = budget_months.scope_id)
            or (budget_months.scope = 'cost_center'
                and project_monthly.cost_center = budget_months.scope_id)
        )
    group by all
),

-- whole hours exactly, the rest of an hour (a snapshot off the hour) to the micro-unit
remaining as (
    select
        budget_months.budget_name,
        budget_months.month,
        run_rates.run_rate_per_hour,
        greatest(
            0, (epoch_ms(budget_months.month_end_at) - epoch_ms(run_rates.last_snapshot_at))
            // 1000
        ) as seconds_left,
    from budget_months
    inner join run_rates
        on run_rates.currency = budget_months.currency
        and (
            budget_months.scope = 'fleet'
            or (budget_months.scope = 'project'
                and run_rates.project_id = budget_months.scope_id)
            or (budget_months.scope = 'cost_center'
                and run_rates.cost_center = budget_months.scope_id)
        )
),

run_rate as (
    select
        budget_name,
        month,
        sum(
            run_rate_per_hour * (seconds_left // 3600)
            + cast(run_rate_per_hour * (seconds_left % 3600) / 3600 as decimal(18, 6))
        ) as remaining_cost,
    from remaining
    group by all
),

final as (
    select
        budget_months.budget_name,
        budget_months.scope,
        budget_months.scope_id,
        budget_months.month,
        budget_months.currency,
        budget_months.amount,
        cast(coalesce(actuals.actual_to_date, 0) as decimal(18, 6)) as actual_to_date,
        cast(
            coalesce(actuals.actual_to_date, 0) + coalesce(run_rate.remaining_cost, 0)
            as decimal(18, 6)
        ) as forecast_month_end,
        cast(coalesce(actuals.actual_to_date, 0) * 100 / budget_months.amount as double)
            as pct_of_budget,
        cast(
            (coalesce(actuals.actual_to_date, 0) + coalesce(run_rate.remaining_cost, 0)) * 100
            / budget_months.amount as double
        ) as forecast_pct,
        case
            when coalesce(actuals.actual_to_date, 0) >= budget_months.amount then 'over'
            when coalesce(actuals.actual_to_date, 0) + coalesce(run_rate.remaining_cost, 0)
                >= budget_months.amount then 'at_risk'
            else 'ok'
        end as status,
    from budget_months
    left join actuals
        on actuals.budget_name = budget_months.budget_name
        and actuals.month = budget_months.month
    left join run_rate
        on run_rate.budget_name = budget_months.budget_name
        and run_rate.month = budget_months.month
)

select * from final

-- Every run-rate forecast a budget got, scored once its month has ended: one row per budget,
-- month and run (the night it was made, `forecast_at` = the run's data time) inside the month.
-- forecast_month_end = billed in the month before forecast_at (buckets that ended by then) +
-- for each cluster of the scope that the run snapshotted, its hourly rate there (storage only
-- when stopped) x the hours from its snapshot to the month's end. actual_month_end and
-- error_pct = (forecast - actual) / actual x 100 once the data covers the month's end (else
-- null: not scored yet).
with

budgets as (
    select * from staging.budgets
),

runs as (
    select * from staging.runs
),

rates as (
    select * from intermediate.snapshot_rates
),

buckets as (
    select * from intermediate.buckets
),

cluster_projects as (
    select * from intermediate.cluster_projects
),

scoped_buckets as (
    select
        buckets.cluster_id,
        buckets.currency,
        buckets.cost,
        buckets.bucket_end_at,
        cast(date_trunc('month', buckets.day) as date) as month,
        cluster_projects.project_id,
        cluster_projects.cost_center,
    from buckets
    left join cluster_projects on cluster_projects.cluster_id = buckets.cluster_id
),

forecast_runs as (
    select
        run_id,
        run_data_at as forecast_at,
        cast(date_trunc('month', run_data_at) as date) as month,
    from runs
    where status in ('complete', 'partial') and run_data_at is not null
),

budget_runs as (
    select
        budgets.*,
        forecast_runs.run_id,
        forecast_runs.forecast_at,
        forecast_runs.month,
        cast(forecast_runs.month + interval 1 month as timestamptz) as month_end_at,
    from budgets
    cross join forecast_runs
),

in_scope as (
    select
        budget_runs.budget_name,
        budget_runs.run_id,
        scoped_buckets.*,
    from budget_runs
    inner join scoped_buckets
        on scoped_buckets.currency = budget_runs.currency
        and scoped_buckets.month = budget_runs.month
        and (
            budget_runs.scope = 'fleet'
            or (budget_runs.scope = 'project' and scoped_buckets.project_id = budget_runs.scope_id)
            or (budget_runs.scope = 'cost_center'
                and scoped_buckets.cost_center = budget_runs.scope_id)
        )
),

actual_before as (
    select
        in_scope.budget_name,
        in_scope.run_id,
        sum(in_scope.cost) filter (where in_scope.bucket_end_at <= budget_runs.forecast_at)
            as billed_before,
        sum(in_scope.cost) as billed_month,
        max(in_scope.bucket_end_at) as covered_until,
    from in_scope
    inner join budget_runs
        on budget_runs.budget_name = in_scope.budget_name
        and budget_runs.run_id = in_scope.run_id
    group by all
),

run_rate as (
    select
        budget_runs.budget_name,
        budget_runs.run_id,
        sum(
            case when rates.status = 'stopped' then rates.storage_per_hour
            else rates.hourly_rate end
            * ((epoch_ms(budget_runs.month_end_at) - epoch_ms(rates.snapshot_at)) // 1000 // 3600)
            + cast(
                case when rates.status = 'stopped' then rates.storage_per_hour
                else rates.hourly_rate end
                * ((epoch_ms(budget_runs.month_end_at) - epoch_ms(rates.snapshot_at)) // 1000
                    % 3600) / 3600
                as decimal(18, 6)
            )
        ) as remaining_cost,
    from budget_runs
    inner join rates
        on rates.run_id = budget_runs.run_id
        and rates.currency = budget_runs.currency
    left join cluster_projects on cluster_projects.cluster_id = rates.cluster_id
    where budget_runs.scope = 'fleet'
    or (budget_runs.scope = 'project' and cluster_projects.project_id = budget_runs.scope_id)
    or (budget_runs.scope = 'cost_center' and cluster_projects.cost_center = budget_runs.scope_id)
    group by all
),

final as (
    select
        budget_runs.budget_name,
        budget_runs.month,
        budget_runs.currency,
        budget_runs.forecast_at,
        cast(
            coalesce(actual_before.billed_before, 0) + coalesce(run_rate.remaining_cost, 0)
            as decimal(18, 6)
        ) as forecast_month_end,
        case when actual_before.covered_until >= budget_runs.month_end_at
            then cast(actual_before.billed_month as decimal(18, 6)) end as actual_month_end,
        case when actual_before.covered_until >= budget_runs.month_end_at
            and actual_before.billed_month <> 0 then cast(
                (coalesce(actual_before.billed_before, 0) + coalesce(run_rate.remaining_cost, 0)
                    - actual_before.billed_month) * 100 / actual_before.billed_month as double
            ) end as error_pct,
    from budget_runs
    left join actual_before
        on actual_before.budget_name = budget_runs.budget_name
        and actual_before.run_id = budget_runs.run_id
    left join run_rate
        on run_rate.budget_name = budget_runs.budget_name
        and run_rate.run_id = budget_runs.run_id
    where actual_before.budget_name is not null or run_rate.budget_name is not null
)

select * from final

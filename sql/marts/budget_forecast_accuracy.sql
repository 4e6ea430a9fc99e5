-- How good each budget's run-rate forecasts were, per ended month (as projection drift is
-- scored): over the month's scored forecasts (marts.budget_forecasts), MAPE = mean |error_pct|
-- and bias = mean error_pct (positive: the forecast ran high).
with

forecasts as (
    select * from marts.budget_forecasts
),

final as (
    select
        budget_name,
        month,
        currency,
        'run_rate' as method,
        count(*) as forecasts,
        any_value(actual_month_end) as actual_month_end,
        avg(abs(error_pct)) as mape_pct,
        avg(error_pct) as bias_pct,
    from forecasts
    where error_pct is not null
    group by budget_name, month, currency
)

select * from final

-- incremental: per cluster where projected_at + to_hours(case horizon when 'daily' then 24 when 'weekly' then 168 else 720 end) > from_at
-- Each scored projection against what the horizon actually cost (DESIGN "Definitions"):
-- horizons fully elapsed and at least drift_min_coverage_pct covered.
with

-- an incremental build rescores the projections whose horizon (at most 720 h: daily, weekly,
-- monthly) reaches into its scope
actuals as (
    select *
    from intermediate.projection_actuals
    where projected_at > getvariable('build_from_at') - to_hours(720)
),

causes as (
    select *
    from intermediate.projection_causes
    where projected_at > getvariable('build_from_at') - to_hours(720)
),

scored as (
    select
        actuals.*,
        causes.cause,
        actuals.actual_cost - actuals.projected_cost as difference,
    from actuals
    left join causes
        on causes.cluster_id = actuals.cluster_id
        and causes.projected_at = actuals.projected_at
        and causes.horizon = actuals.horizon
    where actuals.coverage_pct >= getvariable('drift_min_coverage_pct')
),

final as (
    select
        cluster_id,
        projected_at,
        horizon,
        cast(projected_cost as decimal(18, 6)) as projected_cost,
        cast(actual_cost as decimal(18, 6)) as actual_cost,
        case
            when projected_cost <> 0 then 100.0 * difference / projected_cost
        end as drift_pct,
        abs(difference) >= getvariable('drift_flag_min_abs')
        and (
            projected_cost = 0
            or abs(100.0 * difference / projected_cost) >= getvariable('drift_flag_pct')
        ) as is_flagged,
        coalesce(cause, 'usage') as cause,
        currency,
    from scored
)

select * from final

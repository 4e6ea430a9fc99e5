-- How well each cluster's projections did, per horizon, over its last mape_days scored days:
-- MAPE (mean absolute drift_pct) and bias (mean drift_pct; positive = spent more than projected).
with

drift as (
    select * from marts.projection_drift
),

dated as (
    select
        *,
        -- the build runs with TimeZone = UTC
        cast(projected_at as date) as projected_day,
    -- every scored projection counts as a day, a projection of 0 too (its drift_pct is null:
    -- avg skips it, but it still takes one of the last mape_days days)
    from drift
),

ranked as (
    select
        *,
        dense_rank() over (
            partition by cluster_id, horizon order by projected_day desc
        ) as day_rank,
    from dated
),

final as (
    select
        cluster_id,
        horizon,
        currency,
        count(distinct projected_day) as scored_days,
        min(projected_day) as first_day,
        max(projected_day) as last_day,
        -- averaged as DECIMAL: the result does not depend on the order rows are added in
        cast(avg(cast(abs(drift_pct) as decimal(18, 6))) as double) as mape_pct,
        cast(avg(cast(drift_pct as decimal(18, 6))) as double) as bias_pct,
        count(*) filter (where is_flagged) as flagged,
    from ranked
    where day_rank <= getvariable('mape_days')
    group by cluster_id, horizon, currency
)

select * from final

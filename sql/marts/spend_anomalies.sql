-- A project's (scope `project`) and the fleet's (scope `fleet`, scope_id null) daily cost against
-- its own recent baseline: the median of the previous `anomaly_baseline_days` complete days
-- (a day without spend counts as 0), and the median absolute deviation (MAD) from it. A day is an
-- anomaly when |cost - baseline| >= anomaly_min_cost (the money floor), > anomaly_mad_factor x MAD
-- and >= anomaly_min_pct % of the baseline. Only complete UTC days of the data are judged (the first and the
-- last, partly covered, are not), and only with a full baseline. cluster_ids: the clusters whose
-- cost moved the same way against their own baselines, most first; cause: the change of the
-- first of them from the day before (started, stopped, resize, rate_change, else usage).
with

cluster_daily as (
    select * from intermediate.cluster_daily
),

cluster_projects as (
    select * from intermediate.cluster_projects
),

changes as (
    select * from intermediate.cluster_day_changes
),

span as (
    select
        case
            when min(first_bucket_at) = date_trunc('day', min(first_bucket_at))
                then cast(min(first_bucket_at) as date)
            else cast(min(first_bucket_at) as date) + 1
        end as first_day,
        cast(max(last_bucket_end_at) as date) - 1 as last_day,
    from cluster_daily
),

-- the series unnested as a select item of its own (Spark takes no generator inside a cast)
complete_day_starts as (
    select unnest(generate_series(
        cast(first_day as timestamp), cast(last_day as timestamp), interval 1 day
    )) as day_at
    from span
    where first_day <= last_day
),

complete_days as (
    select cast(day_at as date) as day
    from complete_day_starts
),

-- each cluster in its project's scope and in the fleet's
cluster_ids as (
    select distinct cluster_id, currency from cluster_daily
),

cluster_scopes as (
    select
        'project' as scope,
        cluster_projects.project_id as scope_id,
        cluster_ids.cluster_id,
        cluster_ids.currency,
    from cluster_ids
    left join cluster_projects on cluster_projects.cluster_id = cluster_ids.cluster_id
    union all
    select 'fleet' as scope, cast(null as varchar) as scope_id, cluster_id, currency,
    from cluster_ids
),

-- every scope on every complete day (0 when it did not bill). Summed from the cluster-days that
-- billed, not from a spine of every cluster on every day: that spine, twice over (the projects
-- and the fleet) and read three times, held 7 M rows at 10,000 clusters x 365 days and failed
-- the nightly build's memory limit
scope_costs as (
    select
        cluster_scopes.scope,
        cluster_scopes.scope_id,
        cluster_scopes.currency,
        cluster_daily.day,
        sum(cluster_daily.cost) as cost,
    from cluster_daily
    inner join cluster_scopes
        on cluster_scopes.cluster_id = cluster_daily.cluster_id
        and cluster_scopes.currency = cluster_daily.currency
    group by all
),

scope_ids as (
    select distinct scope, scope_id, currency from cluster_scopes
),

scope_daily as (
    select
        scope_ids.scope,
        scope_ids.scope_id,
        scope_ids.currency,
        complete_days.day,
        coalesce(scope_costs.cost, 0) as cost,
    from scope_ids
    cross join complete_days
    left join scope_costs
        on scope_costs.scope = scope_ids.scope
        and scope_costs.scope_id is not distinct from scope_ids.scope_id
        and scope_costs.currency = scope_ids.currency
        and scope_costs.day = complete_days.day
),

baselines as (
    select
        today.scope,
        today.scope_id,
        today.currency,
        today.day,
        any_value(today.cost) as cost,
        median(before.cost) as baseline,
        count(*) as baseline_days,
    from scope_daily as today
    inner join scope_daily as before
        on before.scope = today.scope
        and before.scope_id is not distinct from today.scope_id
        and before.currency = today.currency
        and before.day < today.day
        and before.day >= today.day - getvariable('anomaly_baseline_days')
    group by all
    having count(*) = getvariable('anomaly_baseline_days')
),

deviations as (
    select
        baselines.scope,
        baselines.scope_id,
        baselines.currency,
        baselines.day,
        median(abs(before.cost - baselines.baseline)) as mad,
    from baselines
    inner join scope_daily as before
        on before.scope = baselines.scope
        and before.scope_id is not distinct from baselines.scope_id
        and before.currency = baselines.currency
        and before.day < baselines.day
        and before.day >= baselines.day - getvariable('anomaly_baseline_days')
    group by all
),

flagged as (
    select baselines.*, deviations.mad,
    from baselines
    inner join deviations
        on deviations.scope = baselines.scope
        and deviations.scope_id is not distinct from baselines.scope_id
        and deviations.currency = baselines.currency
        and deviations.day = baselines.day
    where abs(baselines.cost - baselines.baseline)
        >= cast(getvariable('anomaly_min_cost') as decimal(18, 6))
    and abs(baselines.cost - baselines.baseline)
        > cast(getvariable('anomaly_mad_factor') as decimal(18, 6)) * deviations.mad
    -- and a share of the baseline: a steady fleet's MAD is tiny, a few % is not news
    and abs(baselines.cost - baselines.baseline) * 100
        >= cast(getvariable('anomaly_min_pct') as decimal(18, 6)) * abs(baselines.baseline)
),

-- the clusters of each flagged scope on the flagged day and its baseline days (0 when a cluster
-- did not bill): all a contribution reads
flagged_spine as (
    select distinct
        flagged.scope,
        flagged.scope_id,
        cluster_scopes.cluster_id,
        flagged.currency,
        complete_days.day,
        coalesce(cluster_daily.cost, 0) as cost,
    from flagged
    inner join cluster_scopes
        on cluster_scopes.scope = flagged.scope
        and cluster_scopes.scope_id is not distinct from flagged.scope_id
        and cluster_scopes.currency = flagged.currency
    inner join complete_days
        on complete_days.day <= flagged.day
        and complete_days.day >= flagged.day - getvariable('anomaly_baseline_days')
    left join cluster_daily
        on cluster_daily.cluster_id = cluster_scopes.cluster_id
        and cluster_daily.currency = cluster_scopes.currency
        and cluster_daily.day = complete_days.day
),

-- each cluster of a flagged scope against its own baseline over the same days
contributions as (
    select
        flagged.scope,
        flagged.scope_id,
        flagged.currency,
        flagged.day,
        today.cluster_id,
        any_value(today.cost) - median(before.cost) as delta,
        any_value(flagged.cost - flagged.baseline) as scope_delta,
    from flagged
    inner join flagged_spine as today
        on today.scope = flagged.scope
        and today.scope_id is not distinct from flagged.scope_id
        and today.currency = flagged.currency
        and today.day = flagged.day
    inner join flagged_spine as before
        on before.scope = flagged.scope
        and before.scope_id is not distinct from flagged.scope_id
        and before.cluster_id = today.cluster_id
        and before.currency = flagged.currency
        and before.day < flagged.day
        and before.day >= flagged.day - getvariable('anomaly_baseline_days')
    group by all
),

behind as (
    select
        contributions.*,
        row_number() over (
            partition by scope, scope_id, currency, day
            order by abs(delta) desc, cluster_id
        ) as contribution_rank,
    from contributions
    where sign(delta) = sign(scope_delta) and delta <> 0
),

explained as (
    select
        behind.scope,
        behind.scope_id,
        behind.currency,
        behind.day,
        string_agg(behind.cluster_id, ',' order by behind.contribution_rank) as cluster_ids,
        -- the first cluster billed nothing that day (deleted): no change row, it stopped
        -- (one row has rank 1; max() over a case is plain SQL every engine reads)
        max(case when behind.contribution_rank = 1 then coalesce(changes.cause, 'stopped') end)
            as cause,
    from behind
    left join changes
        on changes.cluster_id = behind.cluster_id
        and changes.day = behind.day
        and changes.currency = behind.currency
    group by all
),

final as (
    select
        flagged.day,
        flagged.scope,
        flagged.scope_id,
        flagged.currency,
        cast(flagged.cost as decimal(18, 6)) as cost,
        cast(flagged.baseline as decimal(18, 6)) as baseline,
        cast(
            (flagged.cost - flagged.baseline) * 100 / nullif(flagged.baseline, 0) as double
        ) as deviation_pct,
        -- no cluster moved the way the scope did (medians do not add up): usage
        coalesce(explained.cause, 'usage') as cause,
        cast(flagged.mad as decimal(18, 6)) as mad,
        explained.cluster_ids,
    from flagged
    left join explained
        on explained.scope = flagged.scope
        and explained.scope_id is not distinct from flagged.scope_id
        and explained.currency = flagged.currency
        and explained.day = flagged.day
)

select * from final

-- materialized: view
-- Each recommendation's effective state for people: marts.recommendations with the decisions
-- taken on it (`gpucost recs ...`) and the configuration's [[suppress]] entries. A view, so a
-- decision shows at once, without a build. `state`: resolved | closed as in
-- marts.recommendations; else suppressed (a matching [[suppress]] entry in force), dismissed
-- (until its date, and while monthly savings stay below resurface_at_savings, +50 % of the
-- savings dismissed), snoozed (until its date), or open. Dates compare with the day of the
-- newest snapshot (data time, so that replayed nights behave as the nights they replay); an
-- `until` day is the first day the decision no longer holds.
with

recommendations as (
    select * from marts.recommendations
),

clusters as (
    select * from marts.clusters
),

projects as (
    select * from staging.cluster_projects
),

snapshots as (
    select * from staging.cluster_snapshots
),

decisions as (
    select * from staging.recommendation_decisions
),

suppressions as (
    select * from staging.recommendation_suppressions
),

windows as (
    select * from intermediate.recommendation_windows
),

as_of as (
    select max(snapshot_day) as as_of_day from snapshots
),

latest_project as (
    select
        projects.cluster_id,
        projects.project_id,
        projects.project_name,
        projects.owner_id,
    from projects
    inner join clusters
        on clusters.cluster_id = projects.cluster_id
        and clusters.last_snapshot_at = projects.snapshot_at
),

latest_decision as (
    select *
    from decisions
    qualify row_number() over (
        partition by rec_id order by decided_at desc, decision_id desc
    ) = 1
),

with_context as (
    select
        recommendations.*,
        clusters.name as cluster_name,
        latest_project.project_id,
        coalesce(latest_project.project_name, clusters.project_name) as project_name,
        latest_project.owner_id,
        cast(windows.evidence_hours as double) as evidence_hours,
        as_of.as_of_day,
    from recommendations
    cross join as_of
    left join clusters on clusters.cluster_id = recommendations.cluster_id
    left join latest_project on latest_project.cluster_id = recommendations.cluster_id
    left join windows
        on windows.cluster_id = recommendations.cluster_id
        and windows.snapshot_at = recommendations.last_seen_at
),

suppressed as (
    select
        with_context.rec_id,
        suppressions.position,
        suppressions.reason,
        suppressions.until_day,
    from with_context
    inner join suppressions
        on (suppressions.cluster_id is null
            or suppressions.cluster_id in (with_context.cluster_id, with_context.cluster_name))
        and (suppressions.project is null
            or suppressions.project in (with_context.project_id, with_context.project_name))
        and (suppressions.kind is null or suppressions.kind = with_context.kind)
        and (suppressions.until_day is null or with_context.as_of_day < suppressions.until_day)
    qualify row_number() over (partition by with_context.rec_id order by suppressions.position) = 1
),

decided as (
    select
        with_context.*,
        latest_decision.decision_id,
        latest_decision.action as decision,
        latest_decision.decided_by,
        latest_decision.decided_at,
        latest_decision.reason as decision_reason,
        latest_decision.until_day as decision_until,
        latest_decision.monthly_savings_at_decision as savings_at_decision,
        latest_decision.resurface_at_savings,
        coalesce(
            latest_decision.action in ('dismiss', 'snooze')
            and (latest_decision.until_day is null
                or with_context.as_of_day < latest_decision.until_day),
            false
        ) as is_decision_in_force,
        coalesce(
            latest_decision.action = 'dismiss'
            and latest_decision.currency = with_context.currency
            and with_context.monthly_savings >= latest_decision.resurface_at_savings,
            false
        ) as has_outgrown_dismissal,
        suppressed.position as suppression_position,
        suppressed.reason as suppression_reason,
        suppressed.until_day as suppression_until,
    from with_context
    left join latest_decision on latest_decision.rec_id = with_context.rec_id
    left join suppressed on suppressed.rec_id = with_context.rec_id
),

final as (
    select
        rec_id,
        cluster_id,
        cluster_name,
        project_id,
        project_name,
        owner_id,
        kind,
        status,
        case
            when status <> 'open' then status
            when suppression_position is not null then 'suppressed'
            when is_decision_in_force and decision = 'dismiss' and not has_outgrown_dismissal
                then 'dismissed'
            when is_decision_in_force and decision = 'snooze' then 'snoozed'
            else 'open'
        end as state,
        monthly_savings,
        currency,
        reason,
        evidence_hours,
        first_seen_at,
        last_seen_at,
        realized_monthly_savings,
        suppression_position is not null
        or (is_decision_in_force and not has_outgrown_dismissal) as is_declined,
        decision_id,
        decision,
        decided_by,
        decided_at,
        decision_reason,
        decision_until,
        savings_at_decision,
        resurface_at_savings,
        is_decision_in_force and has_outgrown_dismissal as is_resurfaced,
        suppression_position,
        suppression_reason,
        suppression_until,
        as_of_day,
    from decided
)

select * from final

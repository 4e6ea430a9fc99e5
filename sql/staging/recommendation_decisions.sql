-- The decisions people took on recommendations (`gpucost recs dismiss|snooze|reopen`), newest
-- last; kept in meta, which no build rewrites.
with

source as (
    select * from meta.recommendation_decisions
),

final as (
    select
        decision_id,
        rec_id,
        action,
        reason,
        until_day,
        decided_by,
        decided_at,
        cast(monthly_savings_at_decision as decimal(18, 6)) as monthly_savings_at_decision,
        cast(resurface_at_savings as decimal(18, 6)) as resurface_at_savings,
        currency,
    from source
)

select * from final

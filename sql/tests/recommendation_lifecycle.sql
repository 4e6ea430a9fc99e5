-- A recommendation's lifecycle is consistent: known status and kind, first seen <= last seen,
-- realized savings exactly on resolved ones.
select *
from marts.recommendations
where status not in ('open', 'resolved', 'closed')
or kind not in ('stop_idle', 'downsize', 'schedule', 'delete_storage', 'investigate_error')
or first_seen_at > last_seen_at
or (status = 'resolved') <> (realized_monthly_savings is not null)

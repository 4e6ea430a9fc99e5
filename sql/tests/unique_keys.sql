-- Every mart's key is unique: returns each duplicated key.
with

duplicates as (
    select 'idle_waste_daily' as mart, cluster_id || '/' || day || '/' || currency as key,
        count(*) as copies
    from marts.idle_waste_daily group by cluster_id, day, currency having count(*) > 1
    union all
    select 'idle_waste_gpu_daily', cluster_id || '/' || gpu_id || '/' || day || '/' || currency,
        count(*)
    from marts.idle_waste_gpu_daily group by cluster_id, gpu_id, day, currency
    having count(*) > 1
    union all
    select 'fleet_daily', day || '/' || currency, count(*)
    from marts.fleet_daily group by day, currency having count(*) > 1
    union all
    select 'projection_drift', cluster_id || '/' || projected_at || '/' || horizon, count(*)
    from marts.projection_drift group by cluster_id, projected_at, horizon having count(*) > 1
    union all
    select 'recommendations', rec_id, count(*)
    from marts.recommendations group by rec_id having count(*) > 1
    union all
    select 'recommendations (cluster, kind)', cluster_id || '/' || kind, count(*)
    from marts.recommendations group by cluster_id, kind having count(*) > 1
    union all
    select 'clusters', cluster_id, count(*)
    from marts.clusters group by cluster_id having count(*) > 1
    union all
    select 'cluster_drift_accuracy', cluster_id || '/' || horizon || '/' || currency, count(*)
    from marts.cluster_drift_accuracy group by cluster_id, horizon, currency
    having count(*) > 1
    union all
    select 'project_monthly', month || '/' || coalesce(project_id, '') || '/' || currency,
        count(*)
    from marts.project_monthly group by month, project_id, currency having count(*) > 1
    union all
    select 'projects', coalesce(project_id, ''), count(*)
    from marts.projects group by project_id having count(*) > 1
    union all
    select 'budget_status', budget_name || '/' || month, count(*)
    from marts.budget_status group by budget_name, month having count(*) > 1
    union all
    select 'spend_anomalies', day || '/' || scope || '/' || coalesce(scope_id, '') || '/'
        || currency, count(*)
    from marts.spend_anomalies group by day, scope, scope_id, currency having count(*) > 1
    union all
    select 'budget_forecasts', budget_name || '/' || forecast_at, count(*)
    from marts.budget_forecasts group by budget_name, forecast_at having count(*) > 1
    union all
    select 'budget_forecast_accuracy', budget_name || '/' || month || '/' || method, count(*)
    from marts.budget_forecast_accuracy group by budget_name, month, method
    having count(*) > 1
    union all
    select 'cluster_cost_daily', cluster_id || '/' || day || '/' || currency || '/' || component,
        count(*)
    from marts.cluster_cost_daily group by cluster_id, day, currency, component
    having count(*) > 1
    union all
    select 'report_days', cast(day as varchar), count(*)
    from marts.report_days group by day having count(*) > 1
    union all
    select 'cluster_configuration', cluster_id, count(*)
    from marts.cluster_configuration group by cluster_id having count(*) > 1
    union all
    select 'cluster_rates', cluster_id || '/' || component, count(*)
    from marts.cluster_rates group by cluster_id, component having count(*) > 1
    union all
    select 'active_alerts', cluster_id || '/' || alert_id, count(*)
    from marts.active_alerts group by cluster_id, alert_id having count(*) > 1
)

select * from duplicates

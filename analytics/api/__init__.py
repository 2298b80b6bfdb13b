"""REST API of the analytics app: the reports of API.md, their CSV exports, the other reports
(time series, attribution, KPIs, conversion paths) and campaign costs."""

from django.urls import URLPattern, URLResolver

from analytics.api import costs, insights, reports

urlpatterns: list[URLPattern | URLResolver] = [
    *reports.urlpatterns,
    *insights.urlpatterns,
    *costs.urlpatterns,
]

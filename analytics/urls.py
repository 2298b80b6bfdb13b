"""Pages of the analytics app: the dashboard at /, the workspace's reports at /reports/, and the
report of a funnel, sequence or broadcast next to its other pages (/funnels/<id>/report/, ...),
so the sidebar and the tabs of those pages show where one is. config/urls.py mounts this after
the funnel and campaigns pages, whose patterns leave these paths alone. (The REST API of the
reports: analytics/api/.)"""

from django.urls import URLPattern, URLResolver, path

from analytics import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.dashboard, name="dashboard"),
    path("reports/", views.overview, name="report-overview"),
    path("reports/export/<slug:report>/", views.section_csv, name="report-section-csv"),
    path("funnels/<uuid:pk>/report/", views.funnel_report, name="report-funnel"),
    path("funnels/<uuid:pk>/report/export/", views.funnel_report_csv, name="report-funnel-csv"),
    path("sequences/<uuid:pk>/report/", views.sequence_report, name="report-sequence"),
    path(
        "sequences/<uuid:pk>/report/export/",
        views.sequence_report_csv,
        name="report-sequence-csv",
    ),
    path("sequences/broadcasts/<uuid:pk>/report/", views.broadcast_report, name="report-broadcast"),
    path(
        "sequences/broadcasts/<uuid:pk>/report/export/",
        views.broadcast_report_csv,
        name="report-broadcast-csv",
    ),
]

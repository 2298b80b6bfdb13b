"""URL wiring: each app's pages and API live in the app; this file only mounts them."""

from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from analytics import api as analytics_api
from campaigns import api as campaigns_api
from contacts import api as contacts_api
from contacts import public_urls as contacts_public
from core.api import urls as core_api
from funnel import api as funnel_api
from funnel import public_urls as funnel_public
from tracking import api as tracking_api
from tracking.esp import esp_webhook_urls

api_v1: list[URLPattern | URLResolver] = [
    path("", include(contacts_api.urlpatterns)),
    path("", include(core_api.urlpatterns)),
    path("", include(funnel_api.urlpatterns)),
    path("", include(campaigns_api.urlpatterns)),
    path("", include(analytics_api.urlpatterns)),
    path("", include(tracking_api.urlpatterns)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("contacts/", include("contacts.urls")),
    path("", include(contacts_public.urlpatterns)),
    path("funnels/", include("funnel.urls")),
    path("sequences/", include("campaigns.urls")),
    path("", include(funnel_public.urlpatterns)),
    path("", include("tracking.urls")),
    # ESP tracking webhooks: anymail's views (its checks), events recorded per request
    # (tracking.esp; docs/esp-webhooks.md), e.g. /webhooks/esp/sendgrid/tracking/.
    path("webhooks/esp/", include(esp_webhook_urls())),
    path("", include("analytics.urls")),
    path("", include("core.urls")),
]

handler404 = "core.views.errors.page_not_found"
handler500 = "core.views.errors.server_error"
handler403 = "core.views.errors.permission_denied"

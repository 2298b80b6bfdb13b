"""Public endpoints of the funnel app: Shopify's orders/create webhook (no login, no API key;
the shop's HMAC signature is the authentication)."""

from __future__ import annotations

import json
import logging

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from funnel.models import ShopifyIntegration
from funnel.services import events_record
from funnel.shopify import ShopifyPayloadError, shopify_order_to_event, shopify_verify

logger = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Shopify-Hmac-Sha256"


@csrf_exempt
@require_POST
def shopify_orders_create(request: HttpRequest, integration_id: str) -> HttpResponse:
    """Unknown integration and bad signature answer alike (401), so ids cannot be probed.
    Shopify retries anything but 2xx; a repeated order is a duplicate (still 200)."""
    integration = (
        ShopifyIntegration.objects.select_related("workspace").filter(pk=integration_id).first()
    )
    try:
        body = request.body
    except RequestDataTooBig:
        return JsonResponse({"error": "payload too large"}, status=413)
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if integration is None or not shopify_verify(
        secret=integration.secret, body=body, header=signature
    ):
        return JsonResponse({"error": "invalid signature"}, status=401)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"error": "the body is not JSON"}, status=400)
    try:
        event = shopify_order_to_event(payload, event_name=integration.event_name)
    except ShopifyPayloadError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    result = events_record(workspace=integration.workspace, inputs=[event])
    if result.errors:
        logger.warning("Shopify order not stored: %s", result.errors)
        return JsonResponse({"error": "the order could not be stored"}, status=400)
    return JsonResponse({"created": result.created, "duplicates": result.duplicates})


urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "integrations/shopify/<uuid:integration_id>/orders-create/",
        shopify_orders_create,
        name="shopify-orders-create",
    ),
]

"""The JSON of the reports (API.md shapes; fields are only ever added). The serializers read
the typed results of analytics.queries directly; they describe the OpenAPI schema, too."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from analytics.queries.base import UNIQUE_RATES

COUNT_FIELDS = {
    "sent": "sent",
    "delivered": "delivered",
    "bounced": "bounced",
    "opened": "opened",
    "clicked": "clicked",
    "unsubscribed": "unsubscribed",
    "complained": "complained",
    "machine_opens": "machine_opened",
    "bot_clicks": "bot_clicked",
    "anonymous_opens": "anonymous_opens",
    "anonymous_clicks": "anonymous_clicks",
    "anonymous_machine_opens": "anonymous_machine_opens",
    "anonymous_bot_clicks": "anonymous_bot_clicks",
}
RATE_FIELDS = (
    "delivery_rate",
    "open_rate",
    "click_rate",
    "click_to_open_rate",
    "bounce_rate",
    "unsubscribe_rate",
    "complaint_rate",
)


def mail_fields(prefix: str = "", *, conversions: bool = True) -> dict[str, serializers.Field]:
    """The mail counts and rates, read from a MailFigures at `prefix` (e.g. "mail.")."""

    def source(name: str, attribute: str) -> dict[str, Any]:
        # DRF refuses a source equal to the field's name.
        return {} if f"{prefix}{attribute}" == name else {"source": f"{prefix}{attribute}"}

    fields: dict[str, serializers.Field] = {
        name: serializers.IntegerField(**source(name, attribute))
        for name, attribute in COUNT_FIELDS.items()
    }
    fields.update({rate: _rate_field(rate, source) for rate in RATE_FIELDS})
    if conversions:
        fields["converted"] = serializers.IntegerField(**source("converted", "converted"))
        fields["conversion_rate"] = _rate_field("conversion_rate", source)
    return fields


def _rate_field(rate: str, source: Any) -> serializers.FloatField:
    """A rate; one over unique openers or clickers is null where anonymously tracked mails
    were opened or clicked by people (MailFigures.*_or_none): it is unknown there."""
    if rate in UNIQUE_RATES:
        return serializers.FloatField(allow_null=True, **source(rate, f"{rate}_or_none"))
    return serializers.FloatField(**source(rate, rate))


def _serializer(name: str, fields: dict[str, Any]) -> type[serializers.Serializer[Any]]:
    return type(name, (serializers.Serializer,), fields)


MailFiguresSerializer = _serializer("MailFigures", mail_fields())


class MoneySerializer(serializers.Serializer[Any]):
    value = serializers.DecimalField(max_digits=18, decimal_places=2)
    currency = serializers.CharField()


class PeriodFields(serializers.Serializer[Any]):
    # "from" is a keyword in Python: declared in __init__ of the subclasses' fields below.
    to = serializers.DateField(source="period.end")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        return {"from": serializers.DateField(source="period.start"), **fields}


FunnelStageSerializer = _serializer(
    "FunnelStage",
    {
        "id": serializers.UUIDField(source="stage_id"),
        "name": serializers.CharField(),
        "key": serializers.CharField(),
        "position": serializers.IntegerField(),
        "entered": serializers.IntegerField(),
        "entrants": serializers.IntegerField(),
        "current": serializers.IntegerField(),
        "advanced": serializers.IntegerField(),
        "advance_rate": serializers.FloatField(),
        "went_back": serializers.IntegerField(),
        "converted": serializers.IntegerField(),
        "conversion_rate": serializers.FloatField(),
        "drop_off": serializers.IntegerField(),
        "drop_off_rate": serializers.FloatField(),
        "median_time_in_stage_seconds": serializers.IntegerField(allow_null=True),
        "loses_most": serializers.BooleanField(),
        **mail_fields("mail.", conversions=False),
    },
)


class GoalSerializer(serializers.Serializer[Any]):
    event = serializers.CharField()
    conversions = serializers.IntegerField()
    contacts = serializers.IntegerField()
    conversion_rate = serializers.FloatField()
    revenue = MoneySerializer(source="main_revenue", allow_null=True)
    revenue_by_currency = MoneySerializer(source="revenue", many=True)


class FunnelPeriodSerializer(PeriodFields):
    stages = FunnelStageSerializer(many=True)
    goal = GoalSerializer()
    loses_most = serializers.UUIDField(source="loses_most.stage_id", allow_null=True, default=None)


class FunnelReportSerializer(FunnelPeriodSerializer):
    funnel = serializers.UUIDField(source="funnel_id")
    name = serializers.CharField()
    previous = FunnelPeriodSerializer(allow_null=True)


SequenceStepSerializer = _serializer(
    "SequenceStepVariant",
    {
        "step": serializers.CharField(source="step_key"),
        "variant": serializers.IntegerField(),
        "subject": serializers.CharField(),
        "stage": serializers.CharField(source="stage_id", allow_null=True),
        "in_graph": serializers.BooleanField(),
        **mail_fields("mail."),
    },
)


class SequencePeriodSerializer(PeriodFields):
    steps = SequenceStepSerializer(many=True)
    totals = MailFiguresSerializer()


class SequenceReportSerializer(SequencePeriodSerializer):
    sequence = serializers.UUIDField(source="sequence_id")
    name = serializers.CharField()
    previous = SequencePeriodSerializer(allow_null=True)


BroadcastVariantSerializer = _serializer(
    "BroadcastVariant",
    {
        "variant": serializers.IntegerField(),
        "subject": serializers.CharField(),
        **mail_fields("mail."),
    },
)


class AbVariantSerializer(serializers.Serializer[Any]):
    variant = serializers.IntegerField()
    subject = serializers.CharField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    successes = serializers.IntegerField()
    rate = serializers.FloatField()


class AbTestSerializer(serializers.Serializer[Any]):
    metric = serializers.CharField()
    sample_percent = serializers.IntegerField()
    wait = serializers.CharField()
    decided = serializers.BooleanField()
    winner = serializers.IntegerField(allow_null=True)
    leader = serializers.IntegerField()
    runner_up = serializers.IntegerField(allow_null=True)
    variants = AbVariantSerializer(many=True)
    z = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    significant = serializers.BooleanField()
    winner_by_chance = serializers.BooleanField()
    decided_by_chance = serializers.BooleanField()


BroadcastReportSerializer = _serializer(
    "BroadcastReport",
    {
        "broadcast": serializers.UUIDField(source="broadcast_id"),
        "name": serializers.CharField(),
        "status": serializers.CharField(),
        "from": serializers.DateField(source="period.start", allow_null=True, default=None),
        "to": serializers.DateField(source="period.end", allow_null=True, default=None),
        "audience": serializers.IntegerField(),
        "queued": serializers.IntegerField(),
        "failed": serializers.IntegerField(),
        "cancelled": serializers.IntegerField(),
        "percent": serializers.IntegerField(),
        "done": serializers.BooleanField(),
        **mail_fields("mail."),
        "variants": BroadcastVariantSerializer(many=True),
        "winner": serializers.IntegerField(allow_null=True),
        "ab_test": AbTestSerializer(allow_null=True),
    },
)


PointSerializer = _serializer(
    "TimeSeriesPoint",
    {
        "start": serializers.DateField(),
        "end": serializers.DateField(),
        "entered": serializers.IntegerField(),
        "conversions": serializers.IntegerField(),
        **mail_fields("mail."),
    },
)


class TimeSeriesPeriodSerializer(PeriodFields):
    interval = serializers.CharField()
    points = PointSerializer(many=True)


class TimeSeriesSerializer(TimeSeriesPeriodSerializer):
    previous = TimeSeriesPeriodSerializer(allow_null=True)


class CreditSerializer(serializers.Serializer[Any]):
    key = serializers.ListField(child=serializers.CharField())
    name = serializers.CharField(source="label")
    conversions = serializers.DecimalField(max_digits=18, decimal_places=4)
    revenue = MoneySerializer(source="revenue_money", many=True)
    interactions = serializers.IntegerField()
    conversion_rate = serializers.FloatField()


class AttributionSerializer(PeriodFields):
    model = serializers.CharField()
    window_days = serializers.IntegerField()
    dimension = serializers.CharField()
    conversions = serializers.IntegerField()
    attributed = serializers.IntegerField()
    unattributed = serializers.IntegerField()
    interactions = serializers.IntegerField()
    conversion_rate = serializers.FloatField()
    credits = CreditSerializer(many=True)


class RevenueKpisSerializer(serializers.Serializer[Any]):
    currency = serializers.CharField()
    revenue = serializers.DecimalField(max_digits=18, decimal_places=2)
    orders = serializers.IntegerField()
    customers = serializers.IntegerField()
    average_order_value = serializers.DecimalField(max_digits=18, decimal_places=2, allow_null=True)
    transaction_frequency = serializers.FloatField()
    customer_lifetime_value = serializers.DecimalField(
        max_digits=18, decimal_places=2, allow_null=True
    )


class KpisSerializer(PeriodFields):
    scope = serializers.CharField()
    cost = MoneySerializer(allow_null=True)
    sent = serializers.IntegerField(source="mail.sent")
    delivered = serializers.IntegerField(source="mail.delivered")
    impressions = serializers.IntegerField()
    cost_per_impression = serializers.DecimalField(max_digits=18, decimal_places=4, allow_null=True)
    acquisitions = serializers.IntegerField()
    cost_per_acquisition = serializers.DecimalField(
        max_digits=18, decimal_places=4, allow_null=True
    )
    engaged_contacts = serializers.IntegerField()
    reached_contacts = serializers.IntegerField()
    engagement_rate = serializers.FloatField()
    revenue = RevenueKpisSerializer(many=True)


class PathSerializer(serializers.Serializer[Any]):
    steps = serializers.ListField(child=serializers.CharField())
    journeys = serializers.IntegerField()
    conversions = serializers.IntegerField()
    without_conversion = serializers.IntegerField()
    conversion_rate = serializers.FloatField()


class PathsSerializer(PeriodFields):
    funnel = serializers.UUIDField(source="funnel_id")
    journeys = serializers.IntegerField()
    conversions = serializers.IntegerField()
    conversion_rate = serializers.FloatField()
    converting = PathSerializer(many=True)
    non_converting = PathSerializer(many=True)

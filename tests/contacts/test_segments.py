"""Segments: the filter grammar against real rows, validation, the registry, API and pages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db.models import Q

from contacts.models import (
    Contact,
    ContactStatus,
    MailingList,
    Segment,
    Subscription,
    SubscriptionStatus,
    Tag,
)
from contacts.segments import (
    SegmentFilterError,
    register_condition,
    segment_count,
    segment_create,
    segment_duration,
    segment_filter_validate,
    segment_members,
    segment_queryset,
    unregister_condition,
)
from core.models import Role, Workspace
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

SEGMENTS_URL = "/api/v1/segments/"
PAGES_URL = "/contacts/segments/"
COUNT_URL = "/contacts/segments/count/"
SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"


# --- Given: three people with known fields, tags and subscriptions --------------------------


def make_contact(workspace: Workspace, created_at: datetime, tags: list[str], **fields: Any):
    with time_machine.travel(created_at, tick=False):
        contact = ContactFactory(workspace=workspace, **fields)
    for name in tags:
        tag, _created = Tag.objects.get_or_create(workspace=workspace, name=name)
        contact.tags.add(tag)
    return contact


@pytest.fixture
def people(workspace: Workspace) -> dict[str, Contact]:
    ada = make_contact(
        workspace,
        datetime(2025, 3, 1, 9, 0, tzinfo=UTC),
        ["vip", "newsletter"],
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        locale="en",
        timezone="Europe/London",
        source="shop",
        score=10,
        status=ContactStatus.SUBSCRIBED,
        confirmed_at=datetime(2025, 3, 1, 10, 0, tzinfo=UTC),
        attributes={"city": "London", "age": 36, "plan": "pro", "born": "1815-12-10"},
    )
    grace = make_contact(
        workspace,
        datetime(2025, 3, 2, 9, 0, tzinfo=UTC),
        ["vip"],
        email="grace@example.org",
        first_name="Grace",
        last_name="Hopper",
        locale="en",
        timezone="America/New_York",
        source="import",
        score=50,
        status=ContactStatus.PENDING,
        attributes={"city": "New York", "age": 85, "born": "1906-12-09"},
    )
    linus = make_contact(
        workspace,
        datetime(2025, 3, 3, 9, 0, tzinfo=UTC),
        [],
        email="linus@example.net",
        first_name="Linus",
        last_name="Torvalds",
        locale="fi",
        timezone="",
        source="",
        score=-5,
        status=ContactStatus.UNSUBSCRIBED,
        attributes={},
    )
    return {"ada": ada, "grace": grace, "linus": linus}


def members(workspace: Workspace, filter: dict[str, Any]) -> set[str]:
    """The first names of the contacts that match."""
    return set(
        segment_queryset(workspace=workspace, filter=filter).values_list("first_name", flat=True)
    )


def where(field: str, op: str, value: Any = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"all": [{"field": field, "op": op}]}
    if value is not None:
        condition["all"][0]["value"] = value
    return condition


def error_of(filter: object) -> str:
    with pytest.raises(SegmentFilterError) as caught:
        segment_filter_validate(filter)
    return caught.value.message


@pytest.fixture
def registered_stage() -> Iterator[list[tuple[uuid.UUID, dict[str, Any]]]]:
    """A stand-in funnel app: "stage" matches contacts whose attributes.stage is the id."""
    calls: list[tuple[uuid.UUID, dict[str, Any]]] = []

    def compile_stage(workspace: Workspace, condition: dict[str, Any]) -> Q:
        calls.append((workspace.pk, condition))
        return Q(workspace=workspace, attributes__stage=condition["stage"])

    from contacts.segments import _registry

    installed = _registry.get("stage")  # the funnel app's own compiler, put back afterwards
    register_condition("stage", compile_stage)
    yield calls
    unregister_condition("stage")
    if installed is not None:
        register_condition("stage", installed)


# --- Operators on fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        # text compared case-insensitively: email and names
        (where("email", "eq", "ADA@Example.com"), {"Ada"}),
        (where("email", "neq", "ada@example.com"), {"Grace", "Linus"}),
        (where("email", "contains", "EXAMPLE.O"), {"Grace"}),
        (where("email", "in", ["GRACE@example.org", "nobody@example.com"]), {"Grace"}),
        (where("first_name", "eq", "ada"), {"Ada"}),
        (where("first_name", "neq", "ADA"), {"Grace", "Linus"}),
        (where("first_name", "in", ["ADA", "linus"]), {"Ada", "Linus"}),
        (where("last_name", "contains", "OPP"), {"Grace"}),
        # other text compared as stored
        (where("locale", "eq", "en"), {"Ada", "Grace"}),
        (where("locale", "eq", "EN"), set()),
        (where("source", "contains", "sho"), {"Ada"}),
        (where("source", "in", ["shop", "import"]), {"Ada", "Grace"}),
        (where("timezone", "exists", True), {"Ada", "Grace"}),
        (where("timezone", "exists", False), {"Linus"}),
        (where("source", "exists"), {"Ada", "Grace"}),
        # numbers
        (where("score", "eq", 10), {"Ada"}),
        (where("score", "neq", 10), {"Grace", "Linus"}),
        (where("score", "gt", 10), {"Grace"}),
        (where("score", "lt", 10), {"Linus"}),
        (where("score", "lt", 10.5), {"Ada", "Linus"}),
        (where("score", "in", [10, -5]), {"Ada", "Linus"}),
        # status as a field
        (where("status", "eq", "pending"), {"Grace"}),
        (where("status", "neq", "subscribed"), {"Grace", "Linus"}),
        (where("status", "in", ["subscribed", "unsubscribed"]), {"Ada", "Linus"}),
        # dates are whole days (workspace time zone: UTC); date-times compare exactly
        (where("created_at", "gt", "2025-03-01"), {"Grace", "Linus"}),
        (where("created_at", "lt", "2025-03-02"), {"Ada"}),
        (where("created_at", "eq", "2025-03-02"), {"Grace"}),
        (where("created_at", "neq", "2025-03-02"), {"Ada", "Linus"}),
        (where("created_at", "gt", "2025-03-02T08:59:59+00:00"), {"Grace", "Linus"}),
        (where("created_at", "lt", "2025-03-02T11:00:00+01:00"), {"Ada", "Grace"}),
        (where("created_at", "lt", "2025-03-02T09:00:00"), {"Ada"}),
        (where("created_at", "eq", "2025-03-03T09:00:00Z"), {"Linus"}),
        (where("confirmed_at", "exists", True), {"Ada"}),
        (where("confirmed_at", "exists", False), {"Grace", "Linus"}),
        (where("confirmed_at", "neq", "2025-03-01"), {"Grace", "Linus"}),
        # attributes: JSON values, compared as stored
        (where("attributes.city", "eq", "London"), {"Ada"}),
        (where("attributes.city", "eq", "london"), set()),
        (where("attributes.city", "neq", "London"), {"Grace", "Linus"}),
        (where("attributes.city", "contains", "YORK"), {"Grace"}),
        (where("attributes.city", "in", ["London", "Paris"]), {"Ada"}),
        (where("attributes.city", "exists", True), {"Ada", "Grace"}),
        (where("attributes.city", "exists", False), {"Linus"}),
        (where("attributes.age", "eq", 36), {"Ada"}),
        (where("attributes.age", "eq", "36"), set()),
        (where("attributes.age", "gt", 40), {"Grace"}),
        (where("attributes.age", "lt", 40), {"Ada"}),
        (where("attributes.age", "in", [85, 99]), {"Grace"}),
        (where("attributes.born", "gt", "1900-01-01"), {"Grace"}),
        (where("attributes.born", "lt", "1815-12-10"), set()),
        (where("attributes.born", "lt", "1815-12-11"), {"Ada"}),
        (where("attributes.born", "gt", "1906-12-08"), {"Grace"}),
        (where("attributes.born", "gt", "1906-12-09"), set()),
    ],
)
def test_field_operators_match_the_right_contacts(workspace, people, filter, expected):
    assert members(workspace, filter) == expected


def test_dates_are_days_in_the_workspace_time_zone(workspace):
    # given a contact created at 00:30 on 2 March in Berlin (23:30 UTC on 1 March)
    workspace.timezone = "Europe/Berlin"
    workspace.save()
    make_contact(workspace, datetime(2025, 3, 1, 23, 30, tzinfo=UTC), [], first_name="Late")

    # then the day is Berlin's
    assert members(workspace, where("created_at", "eq", "2025-03-02")) == {"Late"}
    assert members(workspace, where("created_at", "eq", "2025-03-01")) == set()
    assert members(workspace, where("created_at", "gt", "2025-03-01")) == {"Late"}
    # and a naive date-time is Berlin time too
    assert members(workspace, where("created_at", "lt", "2025-03-02T00:31:00")) == {"Late"}
    assert members(workspace, where("created_at", "lt", "2025-03-02T00:30:00")) == set()


def test_attribute_keys_that_look_like_lookups_stay_keys(workspace):
    # given keys named like Django lookups and one with a double underscore
    make_contact(
        workspace,
        datetime(2025, 3, 1, tzinfo=UTC),
        [],
        first_name="Keys",
        attributes={"contains": "x", "in": 1, "a__b": "deep", "a": {"b": "nested"}},
    )
    make_contact(workspace, datetime(2025, 3, 1, tzinfo=UTC), [], first_name="Plain")

    # then each key is one literal key of the attributes object
    assert members(workspace, where("attributes.contains", "eq", "x")) == {"Keys"}
    assert members(workspace, where("attributes.in", "eq", 1)) == {"Keys"}
    assert members(workspace, where("attributes.a__b", "eq", "deep")) == {"Keys"}
    assert members(workspace, where("attributes.a__b", "eq", "nested")) == set()
    assert members(workspace, where("attributes.has_key", "exists", True)) == set()


# --- Condition kinds -----------------------------------------------------------------------


def test_tag_condition_and_two_tags_each_need_their_own_tag(workspace, people):
    assert members(workspace, {"all": [{"tag": "vip"}]}) == {"Ada", "Grace"}
    assert members(workspace, {"all": [{"tag": "vip"}, {"tag": "newsletter"}]}) == {"Ada"}
    assert members(workspace, {"any": [{"tag": "newsletter"}, {"status": "unsubscribed"}]}) == {
        "Ada",
        "Linus",
    }
    assert members(workspace, {"all": [{"tag": "unknown"}]}) == set()


def test_status_condition(workspace, people):
    assert members(workspace, {"all": [{"status": "subscribed"}]}) == {"Ada"}
    assert members(workspace, {"any": [{"status": "pending"}, {"status": "bounced"}]}) == {"Grace"}


def test_list_condition_needs_a_subscribed_subscription(workspace, people):
    # given a list with one subscribed, one pending and one unsubscribed member
    newsletter = MailingList.objects.create(workspace=workspace, name="Newsletter")
    for name, status in [
        ("ada", SubscriptionStatus.SUBSCRIBED),
        ("grace", SubscriptionStatus.PENDING),
        ("linus", SubscriptionStatus.UNSUBSCRIBED),
    ]:
        Subscription.objects.create(contact=people[name], mailing_list=newsletter, status=status)

    # then only the subscribed one is in it
    assert members(workspace, {"all": [{"list": str(newsletter.pk)}]}) == {"Ada"}
    assert members(workspace, {"all": [{"list": str(uuid.uuid4())}]}) == set()


def test_list_of_another_workspace_matches_nothing(workspace, other_workspace, people):
    # given another workspace's list, even with one of ours subscribed to it
    foreign = MailingList.objects.create(workspace=other_workspace, name="Newsletter")
    Subscription.objects.create(
        contact=people["ada"], mailing_list=foreign, status=SubscriptionStatus.SUBSCRIBED
    )
    theirs = ContactFactory(workspace=other_workspace, first_name="Theirs")
    Subscription.objects.create(
        contact=theirs, mailing_list=foreign, status=SubscriptionStatus.SUBSCRIBED
    )

    # then it matches no one here, and the other workspace's query sees only its own
    assert members(workspace, {"all": [{"list": str(foreign.pk)}]}) == set()
    assert members(other_workspace, {"all": [{"list": str(foreign.pk)}]}) == {"Theirs"}


def test_segments_never_reach_into_another_workspace(workspace, other_workspace, people):
    # given a contact of another workspace that has the same tag and fields
    theirs = make_contact(
        other_workspace,
        datetime(2025, 3, 1, tzinfo=UTC),
        ["vip"],
        first_name="Ada",
        email="ada@example.com",
        status=ContactStatus.SUBSCRIBED,
    )

    # then our segment holds only our contacts
    found = segment_queryset(workspace=workspace, filter={"all": [{"tag": "vip"}]})
    assert set(found.values_list("pk", flat=True)) == {people["ada"].pk, people["grace"].pk}
    assert theirs.pk not in set(
        segment_queryset(workspace=workspace, filter={"all": []}).values_list("pk", flat=True)
    )


def test_nesting_and_empty_groups(workspace, people):
    nested = {
        "all": [
            {"any": [{"tag": "vip"}, {"status": "unsubscribed"}]},
            {"field": "score", "op": "lt", "value": 20},
        ]
    }
    assert members(workspace, nested) == {"Ada", "Linus"}
    deeper = {"any": [{"all": [{"tag": "vip"}, {"any": [{"status": "pending"}]}]}]}
    assert members(workspace, deeper) == {"Grace"}
    # all of nothing is everyone, any of nothing is no one, and both stay so inside a group
    assert members(workspace, {"all": []}) == {"Ada", "Grace", "Linus"}
    assert members(workspace, {"any": []}) == set()
    assert members(workspace, {"any": [{"all": []}, {"tag": "nope"}]}) == {"Ada", "Grace", "Linus"}
    assert members(workspace, {"all": [{"any": []}, {"tag": "vip"}]}) == set()


def test_each_contact_appears_once_and_counts_agree(workspace, people):
    filter = {"any": [{"tag": "vip"}, {"tag": "newsletter"}]}
    emails = list(segment_queryset(workspace=workspace, filter=filter).values_list("email"))
    assert len(emails) == 2
    assert segment_count(workspace=workspace, filter=filter) == 2


def test_segment_members_reads_the_saved_filter_newest_first(workspace, people):
    segment = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    assert list(segment_members(segment).values_list("first_name", flat=True)) == [
        "Grace",
        "Ada",
    ]


# --- Validation -------------------------------------------------------------------------------


def test_validation_normalises_the_filter():
    list_id = uuid.uuid4()
    assert segment_filter_validate(
        {
            "any": [
                {"field": "email", "op": "in", "value": ["Ada@Example.COM"]},
                {"field": "attributes.city", "op": "exists"},
                {"tag": "  vip "},
                {"list": str(list_id).upper()},
                {"all": []},
            ]
        }
    ) == {
        "any": [
            {"field": "email", "op": "in", "value": ["ada@example.com"]},
            {"field": "attributes.city", "op": "exists", "value": True},
            {"tag": "vip"},
            {"list": str(list_id)},
            {"all": []},
        ]
    }


@pytest.mark.parametrize(
    ("filter", "message"),
    [
        (
            ["all"],
            'A filter is a JSON object: {"all": [...]} or {"any": [...]}.',
        ),
        (
            {"all": [], "any": []},
            "A group has exactly one key, \"all\" or \"any\"; found: 'all', 'any'.",
        ),
        ({"all": {"tag": "vip"}}, "all: Expected a list of conditions."),
        (
            {"all": [{"tag": "vip"}, {"field": "password", "op": "eq", "value": "x"}]},
            "all[1].field: Unknown field 'password'; use one of email, first_name, last_name, "
            "locale, timezone, source, score, status, created_at, confirmed_at or "
            "attributes.<key>.",
        ),
        (
            {"all": [{"tag": "a"}, {"tag": "b"}, {"field": "email", "op": "like", "value": "x"}]},
            "all[2].op: Unknown operator 'like'; use one of eq, neq, contains, in, gt, lt, exists.",
        ),
        (
            {"any": [{"all": [{"field": "score", "op": "contains", "value": 1}]}]},
            "any[0].all[0].op: The operator 'contains' does not apply to score.",
        ),
        (
            {"all": [{"field": "email", "op": "gt", "value": "a"}]},
            "all[0].op: The operator 'gt' does not apply to email.",
        ),
        (
            {"all": [{"field": "attributes.city-name", "op": "eq", "value": "x"}]},
            "all[0].field: Bad attribute key 'city-name': use letters, digits and _, not "
            "starting with a digit.",
        ),
        (
            {"all": [{"field": "attributes.", "op": "exists"}]},
            "all[0].field: Bad attribute key '': use letters, digits and _, not starting with "
            "a digit.",
        ),
        (
            {"all": [{"field": "attributes.1st", "op": "exists"}]},
            "all[0].field: Bad attribute key '1st': use letters, digits and _, not starting "
            "with a digit.",
        ),
        (
            {"any": [{"opened": "30 days"}]},
            "any[0].opened: Expected an ISO 8601 duration in weeks, days or hours, e.g. P30D, "
            "P2W or PT12H.",
        ),
        (
            {"any": [{"clicked": "P1M"}]},
            "any[0].clicked: Expected an ISO 8601 duration in weeks, days or hours, e.g. P30D, "
            "P2W or PT12H.",
        ),
        (
            {"any": [{"event": "purchase", "within": "P0D"}]},
            "any[0].within: A duration is longer than zero and at most 3650 days.",
        ),
        (
            {"all": [{"all": [{"all": [{"all": [{"all": [{"all": []}]}]}]}]}]},
            "all[0].all[0].all[0].all[0].all[0]: Groups nest at most 5 deep.",
        ),
        (
            {"all": [{"field": "score", "op": "gt", "value": "10"}]},
            "all[0].value: Expected a number.",
        ),
        (
            {"all": [{"field": "score", "op": "gt", "value": True}]},
            "all[0].value: Expected a number.",
        ),
        (
            {"all": [{"field": "created_at", "op": "gt", "value": "yesterday"}]},
            "all[0].value: Expected an ISO 8601 date or date-time, e.g. 2025-03-01 or "
            "2025-03-01T10:00:00+01:00.",
        ),
        (
            {"all": [{"field": "attributes.born", "op": "lt", "value": "2025-13-01"}]},
            "all[0].value: Expected an ISO 8601 date or date-time, e.g. 2025-03-01 or "
            "2025-03-01T10:00:00+01:00.",
        ),
        (
            {"all": [{"field": "email", "op": "in", "value": []}]},
            "all[0].value: in takes a non-empty list of values.",
        ),
        (
            {"all": [{"field": "email", "op": "in", "value": ["a@b.c", 3]}]},
            "all[0].value[1]: Expected a string.",
        ),
        (
            {"all": [{"field": "email", "op": "eq"}]},
            "all[0].value: The value is missing.",
        ),
        (
            {"all": [{"field": "email", "op": "exists", "value": "yes"}]},
            "all[0].value: exists takes true or false.",
        ),
        (
            {"all": [{"field": "attributes.city", "op": "eq", "value": None}]},
            "all[0].value: null is not a value; use exists.",
        ),
        (
            {"all": [{"status": "vip"}]},
            "all[0].status: Unknown status 'vip'; use one of not_subscribed, pending, "
            "subscribed, unsubscribed, bounced, complained.",
        ),
        ({"all": [{"list": "42"}]}, "all[0].list: Expected an id (a UUID string)."),
        ({"all": [{"tag": ""}]}, "all[0].tag: Expected a non-empty string."),
        (
            {"all": [{"tag": "vip", "status": "pending"}]},
            "all[0]: A condition has one kind; found 'tag', 'status'.",
        ),
        ({"all": [{"tag": "vip", "color": "red"}]}, "all[0]: Unexpected key 'color'."),
        (
            {"all": [{"colour": "red"}]},
            "all[0]: Unknown condition with keys 'colour'; expected one of: field, tag, status, "
            "list, stage, event, opened, clicked, all, any.",
        ),
        ({"all": ["vip"]}, "all[0]: A condition is a JSON object."),
    ],
)
def test_validation_errors_name_the_path(filter, message):
    assert error_of(filter) == message


def test_at_most_100_conditions():
    hundred = {"all": [{"tag": f"t{index}"} for index in range(100)]}
    assert segment_filter_validate(hundred) == hundred
    # groups don't count, the conditions inside them do
    nested = {"all": [{"any": [{"tag": "a"}] * 50}, {"any": [{"tag": "b"}] * 51}]}
    assert error_of(nested) == "all[1].any[50]: A filter has at most 100 conditions."


def test_five_levels_of_groups_are_allowed():
    five = {"all": [{"all": [{"all": [{"all": [{"all": [{"tag": "vip"}]}]}]}]}]}
    assert segment_filter_validate(five) == five


def test_segment_filter_error_is_a_django_validation_error():
    with pytest.raises(SegmentFilterError) as caught:
        segment_filter_validate({"all": [{"field": "email", "op": "like", "value": "x"}]})
    assert caught.value.path == "all[0].op"
    assert caught.value.reason.startswith("Unknown operator 'like'")
    assert caught.value.messages == [caught.value.message]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P30D", timedelta(days=30)),
        ("P2W", timedelta(weeks=2)),
        ("PT12H", timedelta(hours=12)),
        ("P1DT2H30M", timedelta(days=1, hours=2, minutes=30)),
    ],
)
def test_durations(text, expected):
    assert segment_duration(text) == expected
    # the funnel app provides the event condition; validation normalises its duration
    assert segment_filter_validate({"any": [{"event": " x ", "within": text.lower()}]}) == {
        "any": [{"event": "x", "within": text}]
    }


# --- The registry hook for conditions of higher apps ---------------------------------------


def test_a_registered_compiler_makes_its_condition_available(
    workspace, other_workspace, people, registered_stage
):
    # given contacts whose (stand-in) stage is known to the registered compiler
    stage_id = str(uuid.uuid4())
    people["grace"].attributes = {"stage": stage_id}
    people["grace"].save()
    ContactFactory(workspace=other_workspace, attributes={"stage": stage_id})

    # when a filter uses the condition
    filter = {"all": [{"stage": stage_id.upper()}, {"tag": "vip"}]}

    # then it validates, compiles through the compiler with the normalised condition, and
    # matches within the workspace
    assert segment_filter_validate(filter) == {"all": [{"stage": stage_id}, {"tag": "vip"}]}
    assert members(workspace, filter) == {"Grace"}
    assert registered_stage[-1] == (workspace.pk, {"stage": stage_id})


@pytest.mark.parametrize(("key", "condition"), [("clicked", "P30D"), ("opened", "P30D")])
def test_a_condition_without_its_app_is_not_available(key, condition):
    from contacts.segments import _registry

    installed = _registry.get(key)  # the campaigns app's compiler, put back afterwards
    unregister_condition(key)
    try:
        assert error_of({"any": [{key: condition}]}) == (
            f"any[0]: The condition '{key}' is not available yet: the app that provides it is "
            "not installed."
        )
    finally:
        if installed is not None:
            register_condition(key, installed)


def test_unregistering_makes_the_condition_unavailable_again(registered_stage):
    unregister_condition("stage")
    assert error_of({"all": [{"stage": str(uuid.UUID(int=1))}]}).endswith(
        "is not available yet: the app that provides it is not installed."
    )


def test_only_grammar_conditions_can_be_registered():
    with pytest.raises(ValueError, match="'field' is not a condition of the segment grammar"):
        register_condition("field", lambda workspace, condition: Q())


# --- Services ----------------------------------------------------------------------------------


def test_segment_create_refuses_an_invalid_filter_and_saves_nothing(workspace):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        segment_create(workspace=workspace, name="Bad", filter={"all": [{"tag": 1}]})
    assert caught.value.message_dict == {"filter": ["all[0].tag: Expected a string."]}
    assert Segment.objects.count() == 0


# --- REST API -----------------------------------------------------------------------------------


def test_api_create_returns_201_with_the_segment_and_its_count(workspace, people, api):
    response = api.post(
        SEGMENTS_URL,
        {
            "name": "VIPs",
            "filter": {
                "all": [{"tag": "vip"}, {"field": "email", "op": "contains", "value": "EXAMPLE"}]
            },
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    segment = Segment.objects.get()
    assert response.json() == {
        "id": str(segment.pk),
        "name": "VIPs",
        "filter": {
            "all": [{"tag": "vip"}, {"field": "email", "op": "contains", "value": "example"}]
        },
        "count": 2,
    }
    assert segment.workspace == workspace
    assert segment.filter == response.json()["filter"]


def test_api_invalid_filter_is_400_naming_the_path_and_creates_nothing(workspace, api):
    response = api.post(
        SEGMENTS_URL,
        {"name": "Bad", "filter": {"all": [{"field": "email", "op": "like", "value": "x"}]}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "filter": [
            "all[0].op: Unknown operator 'like'; use one of eq, neq, contains, in, gt, lt, exists."
        ]
    }
    assert Segment.objects.count() == 0


def test_api_create_is_idempotent_with_a_key(workspace, people, api):
    body = {"name": "Subscribers", "filter": {"all": [{"status": "subscribed"}]}}
    first = api.post(SEGMENTS_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="seg-1")
    second = api.post(SEGMENTS_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="seg-1")
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert Segment.objects.count() == 1


def test_api_list_is_paginated_sorted_and_only_ours(
    workspace, other_workspace, people, api, django_assert_num_queries
):
    vips = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    everyone = segment_create(workspace=workspace, name="Everyone", filter={"all": []})
    segment_create(workspace=other_workspace, name="Theirs", filter={"all": []})

    # key lookup, key last-use, page count, page, one query for all counts
    with django_assert_num_queries(5):
        response = api.get(SEGMENTS_URL)

    assert response.status_code == 200
    assert response.json() == {
        "count": 2,
        "next": None,
        "previous": None,
        "results": [
            {"id": str(everyone.pk), "name": "Everyone", "filter": {"all": []}, "count": 3},
            {"id": str(vips.pk), "name": "VIPs", "filter": {"all": [{"tag": "vip"}]}, "count": 2},
        ],
    }


def test_api_detail_patch_and_delete(workspace, people, api):
    segment = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    url = f"{SEGMENTS_URL}{segment.pk}/"

    assert api.get(url).json() == {
        "id": str(segment.pk),
        "name": "VIPs",
        "filter": {"all": [{"tag": "vip"}]},
        "count": 2,
    }

    renamed = api.patch(url, {"name": "Very important"}, format="json")
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Very important"
    assert renamed.json()["filter"] == {"all": [{"tag": "vip"}]}

    refiltered = api.patch(url, {"filter": {"any": [{"status": "pending"}]}}, format="json")
    assert refiltered.json() == {
        "id": str(segment.pk),
        "name": "Very important",
        "filter": {"any": [{"status": "pending"}]},
        "count": 1,
    }

    refused = api.patch(url, {"filter": {"any": [{"status": "vip"}]}}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {
        "filter": [
            "any[0].status: Unknown status 'vip'; use one of not_subscribed, pending, "
            "subscribed, unsubscribed, bounced, complained."
        ]
    }
    segment.refresh_from_db()
    assert segment.filter == {"any": [{"status": "pending"}]}

    assert api.delete(url).status_code == 204
    assert not Segment.objects.filter(pk=segment.pk).exists()
    assert api.get(url).status_code == 404


def test_api_another_workspaces_segment_is_404_and_untouched(workspace, other_workspace, api):
    theirs = segment_create(workspace=other_workspace, name="Theirs", filter={"all": []})
    url = f"{SEGMENTS_URL}{theirs.pk}/"

    assert api.get(url).status_code == 404
    assert api.get(f"{url}contacts/").status_code == 404
    assert api.patch(url, {"name": "Mine"}, format="json").status_code == 404
    assert api.delete(url).status_code == 404
    theirs.refresh_from_db()
    assert theirs.name == "Theirs"


def test_api_read_only_key_cannot_create(workspace, api_client_for):
    read_only = api_client_for(workspace, access="read")
    response = read_only.post(SEGMENTS_URL, {"name": "X", "filter": {"all": []}}, format="json")
    assert response.status_code == 403
    assert Segment.objects.count() == 0


def test_api_segment_contacts_are_paginated_with_a_constant_query_count(
    workspace, people, api, django_assert_num_queries
):
    segment = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    url = f"{SEGMENTS_URL}{segment.pk}/contacts/"

    api.get("/api/v1/workspace/")  # the key's last use is noted at most once a minute

    # key, segment, member count, page, tags, funnel stages
    with django_assert_num_queries(6):
        response = api.get(url)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [contact["email"] for contact in body["results"]] == [
        "grace@example.org",
        "ada@example.com",
    ]
    assert body["results"][1]["tags"] == ["newsletter", "vip"]

    # given many more members, the same number of queries
    for index in range(10):
        make_contact(
            workspace, datetime(2025, 4, 1, tzinfo=UTC), ["vip", f"t{index}"], first_name="N"
        )
    with django_assert_num_queries(6):
        response = api.get(url, {"page_size": 5})
    assert response.json()["count"] == 12
    assert len(response.json()["results"]) == 5


# --- Pages -----------------------------------------------------------------------------------


@pytest.fixture
def editor(workspace, owner, member_of):
    return member_of(workspace, Role.EDITOR)


@pytest.fixture
def viewer(workspace, owner, member_of):
    return member_of(workspace, Role.VIEWER)


def test_list_page_shows_segments_with_counts(workspace, people, viewer, logged_in):
    segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    segment_create(workspace=workspace, name=SCRIPT, filter={"all": []})

    response = logged_in(viewer).get(PAGES_URL)

    assert response.status_code == 200
    assert [(segment.name, count) for segment, count in response.context["rows"]] == [
        (SCRIPT, 3),
        ("VIPs", 2),
    ]
    html = response.content.decode()
    assert ESCAPED_SCRIPT in html
    assert SCRIPT not in html
    assert "New segment" not in html  # a viewer gets no create button


def test_live_count_returns_the_number(workspace, people, viewer, logged_in):
    response = logged_in(viewer).post(
        COUNT_URL, {"name": "", "filter": '{"all": [{"tag": "vip"}]}'}
    )
    assert response.status_code == 200
    assert response.context["count"] == 2
    assert "<strong>2</strong> contacts match now." in response.content.decode()
    assert Segment.objects.count() == 0


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"all": [', "Not valid JSON (line 1, column 10): Expecting value"),
        (
            '{"all": [{"field": "email", "op": "like", "value": "x"}]}',
            "all[0].op: Unknown operator &#x27;like&#x27;; use one of eq, neq, contains, in, gt, "
            "lt, exists.",
        ),
        ("", "Enter a filter."),
    ],
)
def test_live_count_shows_the_validation_error(workspace, viewer, logged_in, text, error):
    response = logged_in(viewer).post(COUNT_URL, {"filter": text})
    assert response.status_code == 200
    assert response.context["count"] is None
    assert error in response.content.decode()


def test_live_count_answers_only_post(workspace, viewer, logged_in):
    assert logged_in(viewer).get(COUNT_URL).status_code == 405


def test_viewer_cannot_create_or_edit(workspace, viewer, logged_in):
    segment = segment_create(workspace=workspace, name="VIPs", filter={"all": []})
    client = logged_in(viewer)

    assert client.get(f"{PAGES_URL}new/").status_code == 403
    response = client.post(f"{PAGES_URL}new/", {"name": "Mine", "filter": '{"all": []}'})
    assert response.status_code == 403
    assert (
        client.post(
            f"{PAGES_URL}{segment.pk}/edit/", {"name": "Renamed", "filter": '{"any": []}'}
        ).status_code
        == 403
    )
    assert client.post(f"{PAGES_URL}{segment.pk}/delete/").status_code == 403

    assert list(Segment.objects.values_list("name", "filter")) == [("VIPs", {"all": []})]


def test_editor_creates_a_segment_through_the_page(workspace, people, editor, logged_in):
    client = logged_in(editor)
    form = client.get(f"{PAGES_URL}new/")
    assert form.status_code == 200
    html = form.content.decode()
    assert 'hx-post="/contacts/segments/count/"' in html
    assert 'hx-trigger="input changed delay:400ms"' in html
    assert form.context["count"] == 0  # the example: subscribed Berliners

    response = client.post(
        f"{PAGES_URL}new/",
        {"name": "Subscribers", "filter": '{"all": [{"status": "subscribed"}]}'},
    )

    segment = Segment.objects.get()
    assert response.status_code == 302
    assert response.url == f"{PAGES_URL}{segment.pk}/"
    assert (segment.workspace, segment.name, segment.filter) == (
        workspace,
        "Subscribers",
        {"all": [{"status": "subscribed"}]},
    )


def test_invalid_filter_on_the_page_shows_the_error_and_saves_nothing(
    workspace, people, editor, logged_in
):
    segment = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    response = logged_in(editor).post(
        f"{PAGES_URL}{segment.pk}/edit/",
        {"name": "Renamed", "filter": '{"all": [{"field": "attributes.a-b", "op": "exists"}]}'},
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "filter": [
            "all[0].field: Bad attribute key 'a-b': use letters, digits and _, not starting "
            "with a digit."
        ]
    }
    segment.refresh_from_db()
    assert (segment.name, segment.filter) == ("VIPs", {"all": [{"tag": "vip"}]})


def test_editor_edits_and_deletes_a_segment(workspace, people, editor, logged_in):
    segment = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    client = logged_in(editor)

    edit = client.get(f"{PAGES_URL}{segment.pk}/edit/")
    assert edit.context["count"] == 2
    response = client.post(
        f"{PAGES_URL}{segment.pk}/edit/",
        {"name": "Pending", "filter": '{"all": [{"status": "pending"}]}'},
    )
    assert response.status_code == 302
    segment.refresh_from_db()
    assert (segment.name, segment.filter) == ("Pending", {"all": [{"status": "pending"}]})

    confirm = client.get(f"{PAGES_URL}{segment.pk}/delete/")
    assert confirm.status_code == 200
    assert Segment.objects.filter(pk=segment.pk).exists()
    deleted = client.post(f"{PAGES_URL}{segment.pk}/delete/")
    assert deleted.status_code == 302
    assert deleted.url == PAGES_URL
    assert not Segment.objects.filter(pk=segment.pk).exists()
    assert Contact.objects.filter(workspace=workspace).count() == 3


def test_detail_page_lists_the_members(workspace, people, viewer, logged_in):
    segment = segment_create(workspace=workspace, name="VIPs", filter={"all": [{"tag": "vip"}]})
    response = logged_in(viewer).get(f"{PAGES_URL}{segment.pk}/")
    assert response.status_code == 200
    assert [contact.email for contact in response.context["page"]] == [
        "grace@example.org",
        "ada@example.com",
    ]
    assert "linus@example.net" not in response.content.decode()


def test_pages_of_another_workspaces_segment_are_404(workspace, other_workspace, owner, logged_in):
    theirs = segment_create(workspace=other_workspace, name="Theirs", filter={"all": []})
    client = logged_in(owner)
    for suffix in ("", "edit/", "delete/"):
        assert client.get(f"{PAGES_URL}{theirs.pk}/{suffix}").status_code == 404
    assert client.post(f"{PAGES_URL}{theirs.pk}/delete/").status_code == 404
    assert Segment.objects.filter(pk=theirs.pk).exists()

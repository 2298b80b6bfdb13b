"""The sequence builder pages: diagram, create, add/reorder/connect steps, the email editor's
preview and test mail, activate/pause, roles and workspace isolation."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import URLPattern, URLResolver, include, path

import config.urls
from campaigns.diagram import sequence_svg
from campaigns.models import Sequence, SequenceStatus
from campaigns.services import sequence_create
from contacts.subscriptions import mailing_list_create
from core.models import Membership, Role, Workspace
from funnel.services import funnel_create
from tests.factories import ContactFactory

# config/urls.py mounts the pages once the lead adds the line; until then this module is the
# URLconf of its tests (the whole site plus /sequences/).
urlpatterns: list[URLPattern | URLResolver] = list(config.urls.urlpatterns)
if not any(str(pattern.pattern) == "sequences/" for pattern in urlpatterns):
    urlpatterns.append(path("sequences/", include("campaigns.urls")))
handler404 = config.urls.handler404
handler500 = config.urls.handler500
handler403 = config.urls.handler403

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

SVG = "{http://www.w3.org/2000/svg}"


def email(key: str, subject: str, next_key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "type": "email",
        "subject": subject,
        "html": "<p>Hi</p>",
        "next": next_key,
        **extra,
    }


def make_sequence(workspace: Workspace, steps: list[dict[str, Any]] | None = None) -> Sequence:
    return sequence_create(
        workspace=workspace,
        name="Onboarding",
        steps=steps or [email("welcome", "Welcome")],
    )


def editor_client(
    workspace: Workspace, member_of: Callable[..., Membership], logged_in: Any
) -> Client:
    return logged_in(member_of(workspace, Role.EDITOR))


# --- the diagram


def test_diagram_has_every_step_once_and_an_edge_per_connection() -> None:
    # given a graph with next, a wait_for (yes/no), a split, and a loop back to the start
    steps = [
        email("welcome", "Welcome", "wait", stage="s-interest"),
        {
            "key": "wait",
            "type": "wait_for",
            "event": {"opened": "welcome"},
            "timeout": "P3D",
            "yes": "offer",
            "no": "split",
        },
        {
            "key": "split",
            "type": "split",
            "paths": [{"weight": 1, "next": "offer"}, {"weight": 3, "next": "pause"}],
        },
        {"key": "pause", "type": "wait", "duration": "P2D", "next": "welcome"},
        {
            "key": "offer",
            "type": "email",
            "subject": "Offer",
            "html": "x",
            "stage": "s-action",
            "next": "end",
        },
        {"key": "end", "type": "exit"},
    ]

    # when it is drawn
    svg = sequence_svg(steps, stage_names={"s-action": "Action"})
    root = ET.fromstring(svg)  # noqa: S314 (our own output)

    # then every step is one box, and every connection one edge of its kind
    boxes = [
        node.get("data-key")
        for node in root.iter(f"{SVG}g")
        if "step" in (node.get("class") or "").split()
    ]
    assert boxes == ["welcome", "wait", "split", "pause", "offer", "end"]
    edges = sorted(
        (node.get("data-from"), node.get("data-to"), node.get("data-kind"))
        for node in root.iter(f"{SVG}path")
        if node.get("data-kind")
    )
    assert edges == sorted(
        [
            ("welcome", "wait", "next"),
            ("wait", "offer", "yes"),
            ("wait", "split", "no"),
            ("split", "offer", "path"),
            ("split", "pause", "path"),
            ("pause", "welcome", "next"),
            ("offer", "end", "next"),
        ]
    )
    # the loop back to the start curves up the side; the entry is marked; rows are BFS depths
    back = [n for n in root.iter(f"{SVG}path") if "edge-back" in (n.get("class") or "")]
    assert [(n.get("data-from"), n.get("data-to")) for n in back] == [("pause", "welcome")]
    rows = {n.get("data-key"): n.get("data-row") for n in root.iter(f"{SVG}g") if n.get("data-row")}
    assert rows == {
        "welcome": "0",
        "wait": "1",
        "offer": "2",
        "split": "2",
        "end": "3",
        "pause": "3",
    }
    labels = sorted(
        "".join(n.itertext())
        for n in root.iter(f"{SVG}g")
        if "edge-label" in (n.get("class") or "")
    )
    assert labels == ["25 %", "75 %", "no", "yes"]
    assert "Action" in svg and "3 days" in svg and "2 days" in svg
    # the output is deterministic
    assert sequence_svg(steps, stage_names={"s-action": "Action"}) == svg


def test_diagram_escapes_text_from_outside() -> None:
    svg = sequence_svg(
        [email("welcome", '<script>alert("x")</script>', stage="s1")],
        stage_names={"s1": "<b>Interest</b>"},
    )
    ET.fromstring(svg)  # noqa: S314 (our own output, still well-formed)
    assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg and "&lt;b&gt;Interest&lt;/b&gt;" in svg


# --- create, add, reorder, connect


def test_create_a_sequence_through_the_page(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    newsletter = mailing_list_create(workspace=workspace, name="Newsletter")

    response = client.post(
        "/sequences/new/",
        {
            "name": "Welcome series",
            "funnel": "",
            "trigger_type": "list_confirmed",
            "trigger_list": str(newsletter.pk),
            "reentry": "never",
            "window_days": ["0", "1", "2"],
            "window_start": "09:00",
            "window_end": "17:30",
            "exit_event": "purchase",
            "utm_source": "funnelwerk",
            "utm_campaign": " welcome ",
        },
    )

    sequence = Sequence.objects.get(workspace=workspace)
    assert response.status_code == 302
    assert response["Location"] == f"/sequences/{sequence.pk}/"
    assert sequence.name == "Welcome series"
    assert sequence.status == SequenceStatus.DRAFT
    assert sequence.trigger == {"type": "list_confirmed", "list": str(newsletter.pk)}
    assert sequence.send_window == {"days": [0, 1, 2], "start": "09:00", "end": "17:30"}
    assert sequence.exit_on == [{"type": "event", "name": "purchase"}]
    assert sequence.utm == {"utm_source": "funnelwerk", "utm_campaign": "welcome"}
    settings_page = client.get(f"/sequences/{sequence.pk}/settings/").content.decode()
    assert 'name="utm_campaign" value="welcome"' in settings_page
    assert [step["key"] for step in sequence.steps] == ["welcome"]
    page = client.get("/sequences/").content.decode()
    assert "Welcome series" in page and "confirms the list “Newsletter”" in page


def test_add_an_email_a_wait_and_another_email_in_a_chain(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida")
    interest = funnel.stages.get(key="interest")
    sequence = sequence_create(
        workspace=workspace, name="S", funnel=funnel, steps=[email("welcome", "Welcome")]
    )
    url = f"/sequences/{sequence.pk}/steps/add/"

    # the add form proposes to go after the last open end
    page = client.get(url + "?type=wait").content.decode()
    assert '<option value="welcome" selected>' in page

    client.post(
        url,
        {"type": "wait", "key": "", "after": "welcome", "wait_amount": "2", "wait_unit": "days"},
    )
    client.post(
        url,
        {
            "type": "email",
            "key": "story",
            "after": "wait_1",
            "subject": "Our story",
            "html": "<p>Story</p>",
            "stage": str(interest.pk),
        },
    )
    response = client.post(url, {"type": "wait", "key": "", "after": "story", "until": "09:00"})

    sequence.refresh_from_db()
    assert response.status_code == 302
    assert sequence.steps == [
        {
            "key": "welcome",
            "type": "email",
            "subject": "Welcome",
            "html": "<p>Hi</p>",
            "next": "wait_1",
        },
        {"key": "wait_1", "type": "wait", "duration": "P2D", "next": "story"},
        {
            "key": "story",
            "type": "email",
            "subject": "Our story",
            "html": "<p>Story</p>",
            "stage": str(interest.pk),
            "next": "wait_2",
        },
        {"key": "wait_2", "type": "wait", "until": "09:00", "next": None},
    ]

    builder = client.get(f"/sequences/{sequence.pk}/").content.decode()
    assert "Interest" in builder and "wait 2 days" in builder


def test_the_unconnected_step_is_refused_naming_it_and_the_input_is_kept(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)

    response = client.post(
        f"/sequences/{sequence.pk}/steps/add/",
        {
            "type": "email",
            "key": "lost",
            "after": "",
            "subject": "Lost mail",
            "html": "<p>Kept</p>",
        },
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "steps[1] (lost): no step leads here (unreachable)" in page
    assert 'value="Lost mail"' in page and "&lt;p&gt;Kept&lt;/p&gt;" in page
    sequence.refresh_from_db()
    assert [step["key"] for step in sequence.steps] == ["welcome"]


def test_reorder_changes_the_json_order(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(
        workspace,
        [email("a", "A", "c"), email("b", "B"), email("c", "C", "b")],
    )

    response = client.post(f"/sequences/{sequence.pk}/steps/b/move/", {"direction": "down"})

    sequence.refresh_from_db()
    assert response.status_code == 302
    assert [step["key"] for step in sequence.steps] == ["a", "c", "b"]
    assert sequence.version == 2


def test_moving_a_step_to_the_start_that_strands_another_is_refused(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace, [email("a", "A", "b"), email("b", "B")])

    response = client.post(
        f"/sequences/{sequence.pk}/steps/b/move/", {"direction": "up"}, follow=True
    )

    assert "steps[1] (a): no step leads here (unreachable)" in response.content.decode()
    sequence.refresh_from_db()
    assert [step["key"] for step in sequence.steps] == ["a", "b"]


def test_connect_sets_next(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace, [email("a", "A", "b"), email("b", "B")])
    client.post(
        f"/sequences/{sequence.pk}/steps/add/",
        {"type": "exit", "key": "stop", "after": "b"},
    )

    response = client.post(f"/sequences/{sequence.pk}/steps/a/connect/", {"next": "stop"})

    sequence.refresh_from_db()
    assert response.status_code == 200  # b is now unreachable: refused, shown, kept
    assert "steps[1] (b): no step leads here (unreachable)" in response.content.decode()
    assert sequence.steps[0]["next"] == "b"
    # and a valid connection is saved
    client.post(f"/sequences/{sequence.pk}/steps/a/connect/", {"next": "b"})
    response = client.post(f"/sequences/{sequence.pk}/steps/b/connect/", {"next": "stop"})
    sequence.refresh_from_db()
    assert response.status_code == 302
    assert [(s["key"], s.get("next")) for s in sequence.steps] == [
        ("a", "b"),
        ("b", "stop"),
        ("stop", None),
    ]


def test_a_step_with_an_unknown_next_shows_the_error_naming_it_and_keeps_the_input(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)

    # on the builder's connect form
    response = client.post(f"/sequences/{sequence.pk}/steps/welcome/connect/", {"next": "ghost"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "steps[0] (welcome): unknown next step &#x27;ghost&#x27;" in page
    assert '<option value="ghost" selected>' in page

    # and on the step form, with the other edits still there
    response = client.post(
        f"/sequences/{sequence.pk}/steps/welcome/",
        {"subject": "Changed subject", "html": "<p>Changed</p>", "next": "ghost"},
    )
    page = response.content.decode()
    assert "steps[0] (welcome): unknown next step &#x27;ghost&#x27;" in page
    assert 'value="Changed subject"' in page and '<option value="ghost" selected>' in page

    sequence.refresh_from_db()
    assert sequence.steps == [email("welcome", "Welcome")]
    assert sequence.version == 1


def test_delete_reconnects_what_led_to_the_step(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(
        workspace, [email("a", "A", "b"), email("b", "B", "c"), email("c", "C")]
    )

    client.post(f"/sequences/{sequence.pk}/steps/b/delete/")

    sequence.refresh_from_db()
    assert [(s["key"], s.get("next")) for s in sequence.steps] == [("a", "c"), ("c", None)]


# --- email editor


def test_preview_renders_subject_and_html_for_a_chosen_contact(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)
    ContactFactory(workspace=workspace, email="grace@example.org", first_name="Grace")

    response = client.post(
        f"/sequences/{sequence.pk}/preview/",
        {
            "subject": "Hi {{ contact.first_name }}",
            "html": "<p>Dear {{ contact.first_name }}</p>",
            "preview_contact": "grace@example.org",
        },
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert '<strong data-testid="preview-subject">Hi Grace</strong>' in page
    # the HTML sits escaped inside srcdoc, at desktop and at mobile width
    assert page.count("&lt;p&gt;Dear Grace&lt;/p&gt;") == 2
    assert 'width="375"' in page


def test_preview_uses_the_sample_contact_without_one(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)

    response = client.post(
        f"/sequences/{sequence.pk}/preview/",
        {"subject": "Hi {{ contact.first_name }}", "html": "<p>Dear {{ contact.first_name }}</p>"},
    )

    page = response.content.decode()
    # the sample contact is Ada Lovelace (campaigns.rendering.sample_contact)
    assert '<strong data-testid="preview-subject">Hi Ada</strong>' in page
    assert page.count("&lt;p&gt;Dear Ada&lt;/p&gt;") == 2
    assert "For a sample contact" in page


def test_preview_shows_a_template_syntax_error_with_its_line(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)

    response = client.post(
        f"/sequences/{sequence.pk}/preview/",
        {"subject": "Hello", "html": "<p>one</p>\n<p>two</p>\n<p>{{ contact.first_name </p>"},
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="preview-error"' in page and "line 3" in page
    assert "iframe" not in page


def test_test_mail_goes_to_the_logged_in_user(workspace, member_of, logged_in) -> None:
    membership = member_of(workspace, Role.EDITOR)
    client = logged_in(membership)
    sequence = make_sequence(workspace)

    response = client.post(
        f"/sequences/{sequence.pk}/test-mail/",
        {"subject": "Welcome {{ contact.first_name }}", "html": "<p>Hello</p>", "from_name": "Ada"},
    )

    assert response.status_code == 200
    assert f"Test mail sent to {membership.user.email}" in response.content.decode()
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == [membership.user.email]
    assert sent.subject.startswith("[Test] Welcome ")
    html = sent.alternatives[0][0]  # type: ignore[attr-defined]
    assert "<p>Hello</p>" in html
    assert workspace.postal_address in html  # the footer
    assert sent.funnelwerk_workspace_id == str(workspace.pk)


def test_test_mail_with_a_template_error_sends_nothing(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)

    response = client.post(
        f"/sequences/{sequence.pk}/test-mail/", {"subject": "{% if %}", "html": "<p>x</p>"}
    )

    assert "Not sent" in response.content.decode()
    assert mail.outbox == []


# --- A/B variants in the email editor


def variant_post(
    subject: str, html: str, variants: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """The email editor's POST: the step's fields and the variants formset."""
    data: dict[str, Any] = {
        "subject": subject,
        "html": html,
        "next": "",
        "variants-TOTAL_FORMS": str(len(variants)),
        "variants-INITIAL_FORMS": str(len(variants)),
        "variants-MIN_NUM_FORMS": "0",
        "variants-MAX_NUM_FORMS": "10",
        **extra,
    }
    for index, variant in enumerate(variants):
        for name, value in variant.items():
            data[f"variants-{index}-{name}"] = "" if value is None else str(value)
    return data


def test_the_editor_shows_the_saved_variants_and_the_builder_counts_them(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    variants = [
        {"subject": "Short & sweet", "html": "<p>A</p>", "weight": 3},
        {"subject": "Long story", "html": "<p>B</p>", "weight": 1},
    ]
    sequence = make_sequence(workspace, [email("welcome", "Welcome", variants=variants)])

    page = client.get(f"/sequences/{sequence.pk}/steps/welcome/").content.decode()

    assert page.count('data-testid="variant"') == 2
    assert 'name="variants-0-subject" value="Short &amp; sweet"' in page
    assert 'name="variants-1-subject" value="Long story"' in page
    assert 'name="variants-0-weight" value="3"' in page
    assert "about 75 % of the mails" in page and "about 25 % of the mails" in page
    assert '"preview_variant": 2' in page  # each variant previews itself
    builder = client.get(f"/sequences/{sequence.pk}/").content.decode()
    assert "2 A/B variants" in builder


def test_adding_a_variant_copies_the_typed_content_and_saves_nothing_yet(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)

    response = client.post(
        f"/sequences/{sequence.pk}/steps/welcome/",
        variant_post("Typed subject", "<p>Typed</p>", [], variant_action="add"),
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert 'name="variants-0-subject" value="Typed subject"' in page
    assert 'name="subject" value="Typed subject"' in page  # the step's own input is kept
    assert "&lt;p&gt;Typed&lt;/p&gt;</textarea>" in page
    assert 'name="variants-TOTAL_FORMS" value="1"' in page
    assert 'class="error"' not in page  # nothing judged yet
    sequence.refresh_from_db()
    assert sequence.version == 1 and sequence.steps == [email("welcome", "Welcome")]


def test_saving_variants_stores_them_in_the_api_shape_and_keeps_what_the_page_does_not_edit(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(
        workspace,
        [
            email(
                "welcome",
                "Welcome",
                variants=[{"subject": "Old", "html": "<p>Old</p>", "weight": 1, "text": "Old"}],
            )
        ],
    )

    # when the saved variant is changed and a new one is added
    response = client.post(
        f"/sequences/{sequence.pk}/steps/welcome/",
        variant_post(
            "Welcome",
            "<p>Hi</p>",
            [
                {
                    "subject": "Hi {{ contact.first_name }}",
                    "html": "<p>A</p>",
                    "weight": 2,
                    "origin": 0,
                },
                {"subject": "Welcome aboard", "html": "<p>B</p>", "weight": 1, "origin": ""},
            ],
        ),
    )

    # then both are saved in order, with the API's keys; the first keeps its text
    assert response.status_code == 302
    sequence.refresh_from_db()
    assert sequence.steps[0]["variants"] == [
        {"subject": "Hi {{ contact.first_name }}", "html": "<p>A</p>", "weight": 2, "text": "Old"},
        {"subject": "Welcome aboard", "html": "<p>B</p>", "weight": 1},
    ]
    assert sequence.version == 2


def test_removing_a_variant_and_saving_drops_it(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    variants = [
        {"subject": "A", "html": "<p>A</p>", "weight": 1},
        {"subject": "B", "html": "<p>B</p>", "weight": 1},
    ]
    sequence = make_sequence(workspace, [email("welcome", "Welcome", variants=variants)])
    url = f"/sequences/{sequence.pk}/steps/welcome/"
    posted = [{**variant, "origin": index} for index, variant in enumerate(variants)]

    # when the first variant is removed, the page shows the second only and saves nothing
    page = client.post(
        url, variant_post("Welcome", "<p>Hi</p>", posted, variant_action="remove:0")
    ).content.decode()
    assert page.count('data-testid="variant"') == 1
    assert 'name="variants-0-subject" value="B"' in page
    assert 'name="variants-0-origin" value="1"' in page
    sequence.refresh_from_db()
    assert len(sequence.steps[0]["variants"]) == 2

    # and saving what the page now holds stores B alone; with none left the key goes too
    client.post(url, variant_post("Welcome", "<p>Hi</p>", posted[1:]))
    sequence.refresh_from_db()
    assert sequence.steps[0]["variants"] == [{"subject": "B", "html": "<p>B</p>", "weight": 1}]
    client.post(url, variant_post("Welcome", "<p>Hi</p>", []))
    sequence.refresh_from_db()
    assert sequence.steps[0] == {**email("welcome", "Welcome"), "stage": None}


def test_a_variant_with_a_template_error_or_no_weight_is_shown_there_and_nothing_is_saved(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)

    response = client.post(
        f"/sequences/{sequence.pk}/steps/welcome/",
        variant_post(
            "Welcome",
            "<p>Hi</p>",
            [
                {
                    "subject": "Fine",
                    "html": "<p>one</p>\n<p>{{ contact.first_name </p>",
                    "weight": 1,
                },
                {"subject": "Also fine", "html": "<p>B</p>", "weight": 0},
            ],
        ),
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert page.count('class="field f-variant-html has-error"') == 1
    assert "line 2" in page
    assert page.count('class="field f-variant-weight has-error"') == 1
    sequence.refresh_from_db()
    assert sequence.version == 1 and "variants" not in sequence.steps[0]


def test_a_post_without_the_variant_forms_keeps_the_saved_variants(
    workspace, member_of, logged_in
) -> None:
    # a page from before variants were editable, or a script, posts only the step's fields
    client = editor_client(workspace, member_of, logged_in)
    variants = [{"subject": "A", "html": "<p>A</p>", "weight": 1}]
    sequence = make_sequence(workspace, [email("welcome", "Welcome", variants=variants)])

    response = client.post(
        f"/sequences/{sequence.pk}/steps/welcome/", {"subject": "Changed", "html": "<p>Hi</p>"}
    )

    assert response.status_code == 302
    sequence.refresh_from_db()
    assert sequence.steps[0]["subject"] == "Changed"
    assert sequence.steps[0]["variants"] == variants


def test_more_variants_than_allowed_are_refused(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)
    many = [{"subject": f"S{n}", "html": "<p>x</p>", "weight": 1} for n in range(11)]

    response = client.post(
        f"/sequences/{sequence.pk}/steps/welcome/", variant_post("Welcome", "<p>Hi</p>", many)
    )

    assert response.status_code == 200
    assert "Please submit at most 10 forms." in response.content.decode()
    sequence.refresh_from_db()
    assert sequence.version == 1


def test_the_preview_shows_the_chosen_variant(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)
    variants = [
        {"subject": "A for {{ contact.first_name }}", "html": "<p>Variant A</p>", "weight": 1},
        {"subject": "B for {{ contact.first_name }}", "html": "<p>Variant B</p>", "weight": 1},
    ]
    data = variant_post("Own {{ contact.first_name }}", "<p>Own</p>", variants)

    second = client.post(
        f"/sequences/{sequence.pk}/preview/", {**data, "preview_variant": "2"}
    ).content.decode()
    own = client.post(f"/sequences/{sequence.pk}/preview/", data).content.decode()

    assert '<strong data-testid="preview-subject">B for Ada</strong>' in second
    assert second.count("&lt;p&gt;Variant B&lt;/p&gt;") == 2
    assert 'data-testid="preview-variant">Variant 2<' in second
    assert "Variant A" not in second
    assert '<strong data-testid="preview-subject">Own Ada</strong>' in own
    assert 'data-testid="preview-variant"' not in own


def test_the_preview_of_a_variant_that_does_not_exist_says_so(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)

    response = client.post(
        f"/sequences/{sequence.pk}/preview/",
        {**variant_post("Own", "<p>Own</p>", []), "preview_variant": "3"},
    )

    page = response.content.decode()
    assert 'data-testid="preview-error"' in page and "Variant 3 does not exist" in page
    assert "iframe" not in page


# --- status, roles, isolation


def test_activate_and_pause(workspace, member_of, logged_in) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = make_sequence(workspace)

    client.post(f"/sequences/{sequence.pk}/status/", {"action": "activate"})
    sequence.refresh_from_db()
    assert sequence.status == SequenceStatus.ACTIVE
    assert ">Pause</button>" in client.get(f"/sequences/{sequence.pk}/").content.decode()

    client.post(f"/sequences/{sequence.pk}/status/", {"action": "pause"})
    sequence.refresh_from_db()
    assert sequence.status == SequenceStatus.PAUSED


def test_a_viewer_reads_but_cannot_change_anything(workspace, member_of, logged_in) -> None:
    client = logged_in(member_of(workspace, Role.VIEWER))
    sequence = make_sequence(workspace)
    base = f"/sequences/{sequence.pk}"

    assert client.get("/sequences/").status_code == 200
    page = client.get(f"{base}/").content.decode()
    assert "Welcome" in page and "Activate" not in page and "Add a step" not in page
    assert client.get(f"{base}/steps/welcome/").status_code == 403
    assert client.get(f"{base}/steps/add/?type=email").status_code == 403
    assert client.get("/sequences/new/").status_code == 403
    posts = [
        (f"{base}/status/", {"action": "activate"}),
        (f"{base}/steps/welcome/", {"subject": "X", "html": "Y"}),
        (f"{base}/steps/welcome/connect/", {"next": ""}),
        (f"{base}/steps/welcome/delete/", {}),
        (f"{base}/steps/welcome/move/", {"direction": "down"}),
        (f"{base}/steps/add/?type=exit", {"type": "exit", "after": "welcome"}),
        (f"{base}/preview/", {"subject": "X", "html": "Y"}),
        (f"{base}/test-mail/", {"subject": "X", "html": "Y"}),
        (f"{base}/settings/", {"name": "Renamed", "trigger_type": "manual", "reentry": "never"}),
        ("/sequences/new/", {"name": "New", "trigger_type": "manual", "reentry": "never"}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url

    sequence.refresh_from_db()
    assert sequence.status == SequenceStatus.DRAFT
    assert sequence.version == 1 and sequence.name == "Onboarding"
    assert sequence.steps == [email("welcome", "Welcome")]
    assert Sequence.objects.count() == 1
    assert mail.outbox == []


def test_another_workspace_gets_404(workspace, other_workspace, member_of, logged_in) -> None:
    sequence = make_sequence(workspace)
    client = logged_in(member_of(other_workspace, Role.OWNER))
    base = f"/sequences/{sequence.pk}"

    for url in (f"{base}/", f"{base}/settings/", f"{base}/steps/welcome/"):
        assert client.get(url).status_code == 404, url
    for url in (
        f"{base}/status/",
        f"{base}/steps/welcome/delete/",
        f"{base}/preview/",
        f"{base}/test-mail/",
    ):
        assert (
            client.post(url, {"action": "activate", "subject": "x", "html": "y"}).status_code == 404
        ), url
    assert "Onboarding" not in client.get("/sequences/").content.decode()
    sequence.refresh_from_db()
    assert sequence.status == SequenceStatus.DRAFT and sequence.version == 1
    assert mail.outbox == []


def test_saving_the_settings_page_keeps_utm_parameters_it_does_not_show(
    workspace, member_of, logged_in
) -> None:
    client = editor_client(workspace, member_of, logged_in)
    sequence = sequence_create(
        workspace=workspace,
        name="S",
        steps=[email("welcome", "Welcome")],
        utm={"utm_source": "api", "utm_term": "shoes", "utm_content": "banner"},
    )
    response = client.post(
        f"/sequences/{sequence.pk}/settings/",
        {"name": "S", "trigger_type": "manual", "reentry": "never", "utm_source": "page"},
    )
    assert response.status_code == 302
    sequence.refresh_from_db()
    assert sequence.utm == {"utm_source": "page", "utm_term": "shoes", "utm_content": "banner"}

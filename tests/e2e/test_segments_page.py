"""End to end in headless Chromium: create a segment while the live count follows the editor."""

from __future__ import annotations

import re

import pytest

from contacts.models import Contact, ContactStatus, Segment
from core.models import Role
from tests.factories import TEST_PASSWORD, MembershipFactory, UserFactory, WorkspaceFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_create_a_segment_with_the_live_count(live_server, page, screenshot):
    # given an owner of a workspace with two subscribers in Berlin and one elsewhere
    workspace = WorkspaceFactory(name="Acme Shop")
    owner = MembershipFactory(
        workspace=workspace, role=Role.OWNER, user=UserFactory(email="owner@acme.test")
    )
    for email, city in [
        ("a@example.org", "Berlin"),
        ("b@example.org", "Berlin"),
        ("c@example.org", "Hamburg"),
    ]:
        Contact.objects.create(
            workspace=workspace,
            email=email,
            status=ContactStatus.SUBSCRIBED,
            attributes={"city": city},
        )

    # when they log in and open the new-segment page
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", owner.user.email)
    page.fill("#id_password", TEST_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/contacts/segments/new/")
    count = page.locator("#segment-count")
    assert count.inner_text() == "2 contacts match now."

    # then typing a broken filter shows where it breaks
    page.fill("#id_name", "Hamburg and friends")
    page.fill("#id_filter", '{"all": [{"field": "attributes.city", "op": "like", "value": "B"}]}')
    page.locator("[data-testid=segment-count-error]").wait_for()
    assert count.inner_text() == (
        "all[0].op: Unknown operator 'like'; use one of eq, neq, contains, in, gt, lt, exists."
    )
    screenshot("segment-form-error")

    # and a fixed one updates the count
    page.fill(
        "#id_filter", '{"any": [{"field": "attributes.city", "op": "contains", "value": "burg"}]}'
    )
    page.locator("[data-testid=segment-count]").wait_for()
    assert count.inner_text() == "1 contact matches now."
    screenshot("segment-form")

    page.click("button:has-text('Create segment')")
    page.wait_for_url(re.compile(r"/contacts/segments/[0-9a-f-]{36}/$"))
    screenshot("segment-detail")
    rows = page.locator("[data-testid=contact-table] tbody tr")
    assert rows.count() == 1
    assert "c@example.org" in rows.first.inner_text()

    segment = Segment.objects.get(workspace=workspace)
    assert segment.name == "Hamburg and friends"
    assert segment.filter == {
        "any": [{"field": "attributes.city", "op": "contains", "value": "burg"}]
    }

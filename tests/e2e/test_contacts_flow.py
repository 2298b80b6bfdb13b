"""End to end in headless Chromium: log in, create a contact, find it by search."""

from __future__ import annotations

import re

import pytest

from contacts.models import Contact
from core.models import Role
from tests.factories import TEST_PASSWORD, MembershipFactory, UserFactory, WorkspaceFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_log_in_create_a_contact_and_find_it_by_search(live_server, page, screenshot):
    # given an owner of a workspace with one other contact
    workspace = WorkspaceFactory(name="Acme Shop")
    owner = MembershipFactory(
        workspace=workspace, role=Role.OWNER, user=UserFactory(email="owner@acme.test")
    )
    Contact.objects.create(workspace=workspace, email="someone.else@example.org")

    # when they log in
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url
    screenshot("login")
    page.fill("#id_username", owner.user.email)
    page.fill("#id_password", TEST_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("h1").inner_text() == "Acme Shop"
    screenshot("dashboard")

    # and create a contact through the form
    page.click("text=Contacts")
    page.click("text=Add contact")
    page.fill("#id_email", "Ada.Lovelace@Example.COM")
    page.fill("#id_first_name", "Ada")
    page.fill("#id_last_name", "Lovelace")
    page.fill("#id_tags", "vip, newsletter")
    page.fill("#id_attributes", '{"city": "London"}')
    screenshot("contact-form")
    page.click("button:has-text('Add contact')")
    page.wait_for_url(re.compile(r"/contacts/[0-9a-f-]{36}/$"))
    screenshot("contact-detail")
    assert "ada.lovelace@example.com" in page.content()

    # then searching for her finds her and only her
    page.click("nav >> text=Contacts")
    page.fill("input[name=search]", "lovelace")
    rows = page.locator("[data-testid=contact-table] tbody tr")
    rows.filter(has_text="ada.lovelace@example.com").wait_for()
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=contact-table] tbody tr').length === 1"
    )
    assert rows.count() == 1
    assert "vip" in rows.first.inner_text()
    assert "search=lovelace" in page.url
    screenshot("contact-search")

    contact = Contact.objects.get(workspace=workspace, email="ada.lovelace@example.com")
    assert contact.first_name == "Ada"
    assert contact.attributes == {"city": "London"}
    assert sorted(contact.tags.values_list("name", flat=True)) == ["newsletter", "vip"]

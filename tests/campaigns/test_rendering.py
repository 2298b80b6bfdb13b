"""Rendering of marketing mails: sandbox, personalisation, CSS, text part, footer, headers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jinja2
import markupsafe
import pytest
from django.core import mail

from campaigns import rendering
from campaigns.models import Enrollment, Message, Sequence
from campaigns.rendering import (
    RenderedEmail,
    check_template,
    message_email,
    render_email,
    render_preview,
    template_context,
)
from contacts.models import Contact, Tag
from contacts.subscriptions import unsubscribe_url
from core.exceptions import ApplicationError
from core.models import Workspace
from tests.factories import ContactFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db

FOOTER_START = '<div class="funnelwerk-footer"'
NO_POSTAL_ADDRESS = (
    "Add the workspace's postal address in the settings first: no marketing mail goes out "
    "without it."
)


@pytest.fixture
def acme() -> Workspace:
    return WorkspaceFactory(
        name="Acme GmbH",
        slug="acme",
        postal_address="Musterstraße 1\n10115 Berlin",
        privacy_policy_url="https://example.com/privacy",
        sender_name="Acme",
        sender_email="news@acme.example",
    )


@pytest.fixture
def grace(acme: Workspace) -> Contact:
    return ContactFactory(
        workspace=acme,
        email="grace@example.org",
        first_name="Grace",
        last_name="Hopper",
        timezone="Europe/Berlin",
        attributes={"city": "Arlington", "plan": "gold"},
    )


def render(
    html: str,
    contact: Contact,
    *,
    subject: str = "Hello",
    text: str | None = None,
    message_id: uuid.UUID | None = None,
    link_rewriter: rendering.LinkRewriter | None = None,
) -> RenderedEmail:
    return render_email(
        subject=subject,
        html=html,
        text=text,
        contact=contact,
        workspace=contact.workspace,
        message_id=message_id,
        cache_key=None,
        link_rewriter=link_rewriter,
    )


def body(rendered: RenderedEmail) -> str:
    """The HTML without the footer we append."""
    return rendered.html.split(FOOTER_START)[0]


def text_body(rendered: RenderedEmail) -> str:
    """The text part without the footer we append."""
    return rendered.text.split("\n\n--\n")[0]


# --- templates and the sandbox ------------------------------------------------------------------


def test_personalisation_with_defaults(grace: Contact, acme: Workspace) -> None:
    # given a contact with a first name and one without
    nameless = ContactFactory(workspace=acme, first_name="", attributes={})
    html = (
        '<p>Hi {{ contact.first_name|default("there") }} from '
        '{{ contact.attributes.city|default("your town") }}'
        "{{ contact.attributes.missing.deeper }}!</p>"
    )
    subject = "{{ contact.first_name|default('Friend')|upper }}, {{ contact.attributes.plan }}"

    # when both are rendered
    for_grace = render(html, grace, subject=subject)
    for_nameless = render(html, nameless, subject=subject)

    # then the values or the defaults appear, and a missing chain is empty
    assert body(for_grace) == "<p>Hi Grace from Arlington!</p>\n"
    assert for_grace.subject == "GRACE, gold"
    assert body(for_nameless) == "<p>Hi there from your town!</p>\n"
    assert for_nameless.subject == "FRIEND,"


def test_template_context_is_plain_data(grace: Contact, acme: Workspace) -> None:
    # given a tagged contact
    grace.tags.add(Tag.objects.create(workspace=acme, name="vip"))
    grace.tags.add(Tag.objects.create(workspace=acme, name="b2b"))

    # when the context is built
    context = template_context(contact=grace, workspace=acme)

    # then it holds only dicts, lists and strings
    unsubscribe = unsubscribe_url(grace)
    assert context == {
        "contact": {
            "email": "grace@example.org",
            "first_name": "Grace",
            "last_name": "Hopper",
            "full_name": "Grace Hopper",
            "locale": "en",
            "timezone": "Europe/Berlin",
            "attributes": {"city": "Arlington", "plan": "gold"},
            "tags": ["b2b", "vip"],
        },
        "workspace": {
            "name": "Acme GmbH",
            "postal_address": "Musterstraße 1\n10115 Berlin",
            "privacy_policy_url": "https://example.com/privacy",
            "sender_name": "Acme",
        },
        "links": {"unsubscribe_url": unsubscribe, "preferences_url": unsubscribe},
    }
    assert context["contact"]["attributes"] is not grace.attributes


def test_check_template_names_the_line_of_a_syntax_error() -> None:
    with pytest.raises(ApplicationError) as error:
        check_template("<p>\n<p>\n{{ contact.first_name } }}")
    assert error.value.message == "line 3: unexpected '}'"

    with pytest.raises(ApplicationError) as error:
        check_template("<p>\n{% for product in products %}")
    assert error.value.message == (
        "line 2: Unexpected end of template. Jinja was looking for the following tags: "
        "'endfor' or 'else'. The innermost block that needs to be closed is 'for'."
    )


def test_check_template_refuses_safe_and_includes() -> None:
    with pytest.raises(ApplicationError) as error:
        check_template("<p>\n{{ contact.first_name|safe }}")
    assert error.value.message == "line 2: No filter named 'safe'."

    with pytest.raises(ApplicationError) as error:
        check_template("<p>\n\n{% include 'other.html' %}")
    assert error.value.message == "line 3: templates cannot include or import other templates"

    check_template("{{ contact.first_name|default('there')|title }}")


@pytest.mark.parametrize(
    "source",
    [
        "{{ contact.__class__ }}",
        "{{ workspace.secret }}",
        "{{ settings }}",
        "{{ settings.SECRET_KEY }}",
        "{{ contact.email.__class__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ '{0.__class__}'.format(contact.email) }}",
        "{{ contact.__dict__ }}",
    ],
)
def test_the_sandbox_renders_what_is_outside_the_context_as_empty(
    grace: Contact, source: str
) -> None:
    rendered = render(f"<p>[{source}]</p>", grace)
    assert body(rendered) == "<p>[]</p>\n"
    assert text_body(rendered) == "[]"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "{{ ''.__class__.__mro__ }}",
            "HTML, line 2: not allowed in a template: "
            "access to attribute '__class__' of 'str' object is unsafe.",
        ),
        (
            "{{ contact.email.__class__() }}",
            "HTML, line 2: not allowed in a template: "
            "access to attribute '__class__' of 'str' object is unsafe.",
        ),
        (
            "{{ cycler.__init__.__globals__ }}",
            "HTML, line 2: not allowed in a template: "
            "access to attribute '__init__' of 'type' object is unsafe.",
        ),
        (
            "{% set _ = contact.attributes.update({'plan': 'free'}) %}",
            "HTML, line 2: not allowed in a template: "
            "access to attribute 'update' of 'dict' object is unsafe.",
        ),
        (
            "{{ 'x' * 1000000 }}",
            "HTML, line 2: not allowed in a template: results longer than 10000 are not allowed",
        ),
        (
            "{% for i in range(100000) %}{% endfor %}",
            "HTML, line 2: range() gives at most 1000 numbers",
        ),
    ],
)
def test_the_sandbox_refuses_escapes_with_a_readable_error(
    grace: Contact, source: str, message: str
) -> None:
    with pytest.raises(ApplicationError) as error:
        render(f"<p>\n{source}</p>", grace)
    assert error.value.message == message


def test_a_runtime_error_names_the_line(grace: Contact) -> None:
    with pytest.raises(ApplicationError) as error:
        render("<p>{{ 1 }}</p>\n<p>{{ 1 / 0 }}</p>", grace)
    assert error.value.message == "HTML, line 2: division by zero"


def test_contact_data_is_escaped_in_html_and_not_in_text(acme: Workspace) -> None:
    # given a contact whose name is markup
    contact = ContactFactory(workspace=acme, first_name='<script>alert("x")</script>')

    # when a mail greets them by name
    rendered = render(
        "<p>Hi {{ contact.first_name }}</p>", contact, subject="Hi {{ contact.first_name }}"
    )

    # then the HTML shows it escaped, the text part and subject as typed
    assert body(rendered) == "<p>Hi &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;</p>\n"
    assert text_body(rendered) == 'Hi <script>alert("x")</script>'
    assert rendered.subject == 'Hi <script>alert("x")</script>'


def test_a_subject_is_one_line(acme: Workspace) -> None:
    contact = ContactFactory(workspace=acme, first_name="Ada\r\nBcc: evil@example.com")
    rendered = render("<p>x</p>", contact, subject="Hi  {{ contact.first_name }}\n!")
    assert rendered.subject == "Hi Ada Bcc: evil@example.com !"


def test_the_date_filter_uses_the_contacts_time_zone(grace: Contact) -> None:
    grace.attributes = {"renews_at": "2025-01-01T23:30:00+00:00"}
    rendered = render("<p>{{ contact.attributes.renews_at|date('%d.%m.%Y %H:%M') }}</p>", grace)
    assert body(rendered) == "<p>02.01.2025 00:30</p>\n"


# --- CSS ---------------------------------------------------------------------------------------


def test_css_is_inlined_and_jinja_survives(grace: Contact) -> None:
    # given a template with a style block, a loop inside a table and a comparison
    html = (
        "<html><head><style>p {color:red} td {padding: 4px}"
        " @media (max-width: 600px) { p { color: blue } }</style></head><body>\n"
        '<p style="margin:0">{% if 2 > 1 %}Hi {{ contact.first_name }}{% endif %}</p>\n'
        "<table>{% for n in range(2) %}<tr><td>{{ n }}</td></tr>{% endfor %}</table>\n"
        "</body></html>"
    )

    # when it is rendered
    rendered = render(html, grace)

    # then the rules are on the elements (the element's own style still last), the @media
    # rule stays in a <style>, and the loop and the condition work
    assert body(rendered) == (
        "<html><head><style>@media (max-width: 600px) { p { color: blue } }</style></head>"
        "<body>\n"
        '<p style="color: red;margin:0">Hi Grace</p>\n'
        '<table><tr><td style="padding: 4px;">0</td></tr>'
        '<tr><td style="padding: 4px;">1</td></tr></table>\n'
    )
    assert rendered.html.endswith("</div></body></html>")


def test_css_inlining_keeps_line_numbers(grace: Contact) -> None:
    html = "<style>\np {color:red}\n</style>\n<p>{{ 1 / 0 }}</p>"
    with pytest.raises(ApplicationError) as error:
        render(html, grace)
    assert error.value.message == "HTML, line 4: division by zero"


@pytest.fixture
def stylesheet_server() -> Iterator[tuple[int, list[str]]]:
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.end_headers()
            self.wfile.write(b"p { color: green }")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], requests
    server.shutdown()
    server.server_close()


def test_css_inlining_fetches_no_url(
    grace: Contact, stylesheet_server: tuple[int, list[str]]
) -> None:
    # given a template pointing at stylesheets on the server's own network
    port, requests = stylesheet_server
    html = (
        f'<link rel="stylesheet" href="http://127.0.0.1:{port}/a.css">'
        "<style>p {color:red}</style><p>x</p>"
    )

    # when it is rendered
    rendered = render(html, grace)

    # then nothing was fetched
    assert requests == []
    assert body(rendered) == (
        f'<link rel="stylesheet" href="http://127.0.0.1:{port}/a.css"><p style="color: red;">x</p>'
        "\n"
    )


def test_css_is_inlined_once_per_template_version(grace: Contact, acme: Workspace) -> None:
    # given two contacts and one step version
    ada = ContactFactory(workspace=acme, first_name="Ada")
    rendering._compiled.cache_clear()
    cache_key = ("sequence", uuid.uuid4(), 3, "welcome", 0)
    html = "<style>p {color:red}</style><p>Hi {{ contact.first_name }}</p>"

    # when both get the mail
    first = render_email(
        subject="s", html=html, text=None, contact=grace, workspace=acme,
        message_id=None, cache_key=cache_key,
    )  # fmt: skip
    second = render_email(
        subject="s", html=html, text=None, contact=ada, workspace=acme,
        message_id=None, cache_key=cache_key,
    )  # fmt: skip

    # then the template was prepared once
    info = rendering._compiled.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert body(first) == '<p style="color: red;">Hi Grace</p>\n'
    assert body(second) == '<p style="color: red;">Hi Ada</p>\n'


# --- text part, footer, headers ----------------------------------------------------------------


def test_the_text_part_is_generated_from_the_html(grace: Contact) -> None:
    html = (
        "<html><head><title>Spring</title><style>p {color:red}</style></head><body>"
        "<h1>Hello {{ contact.first_name }}</h1>"
        '<p>See <a href="https://example.com/a?x=1&amp;y=2">our shop</a> and '
        '<a href="mailto:hi@example.com">mail us</a>, or call <a href="tel:+4930123">'
        "+49 30 123</a>.</p>"
        "<ul>{% for item in ['One', 'Two'] %}<li>{{ item }}</li>{% endfor %}</ul>"
        '<p><a href="https://example.com/b"><img src="logo.png" alt="Logo"></a><br>'
        "Line &amp; more</p>"
        "</body></html>"
    )
    rendered = render(html, grace)
    assert text_body(rendered) == (
        "Hello Grace\n\n"
        "See our shop (https://example.com/a?x=1&y=2) and mail us (hi@example.com), or call "
        "+49 30 123.\n\n"
        "- One\n- Two\n\n"
        "Logo (https://example.com/b)\nLine & more"
    )


def test_a_given_text_part_is_rendered_as_it_is(grace: Contact) -> None:
    rendered = render(
        "<p>HTML</p>", grace, text="Hi {{ contact.first_name }} & <friends>\n\n  indented"
    )
    assert text_body(rendered) == "Hi Grace & <friends>\n\n  indented"


def test_the_footer_is_in_both_parts(grace: Contact) -> None:
    # when a mail without any footer of its own is rendered
    rendered = render("<html><body><p>Hi</p></body></html>", grace)

    # then both parts end with the address and a visible unsubscribe link
    url = unsubscribe_url(grace)
    assert rendered.html == (
        "<html><body><p>Hi</p>"
        '<div class="funnelwerk-footer" style="margin:32px 0 0 0;padding:16px 0 0 0;'
        "border-top:1px solid #dddddd;font-family:Arial,sans-serif;font-size:12px;"
        'line-height:18px;color:#666666;text-align:center">'
        '<p style="margin:0 0 8px 0">Acme GmbH<br>Musterstraße 1<br>10115 Berlin</p>'
        f'<p style="margin:0"><a href="{url}" style="color:#666666;text-decoration:underline">'
        "Unsubscribe</a> &middot; "
        '<a href="https://example.com/privacy" style="color:#666666;text-decoration:underline">'
        "Privacy policy</a></p></div>"
        "</body></html>"
    )
    assert rendered.text == (
        "Hi\n\n--\nAcme GmbH\nMusterstraße 1\n10115 Berlin\n"
        "Privacy policy: https://example.com/privacy\n"
        f"Unsubscribe: {url}\n"
    )


def test_the_footer_follows_the_workspace_and_takes_no_link_from_its_name(
    grace: Contact, acme: Workspace
) -> None:
    # given a workspace renamed, moved, and with a private-use character in its name
    first = render("<p>Hi</p>", grace)
    acme.name = "Acme \ue002 AG"
    acme.postal_address = "Hauptstraße 2\n80331 München"
    acme.save()

    # when its next mail is rendered
    again = render("<p>Hi</p>", grace)

    # then the footer says so, and the unsubscribe link is only where it belongs
    url = unsubscribe_url(grace)
    assert "Acme GmbH" in first.text
    assert again.text.endswith(
        "--\nAcme  AG\nHauptstraße 2\n80331 München\n"
        "Privacy policy: https://example.com/privacy\n"
        f"Unsubscribe: {url}\n"
    )
    assert again.text.count(url) == 1
    assert (
        '<p style="margin:0 0 8px 0">Acme  AG<br>Hauptstraße 2<br>80331 München</p>' in again.html
    )


def test_the_footer_speaks_the_contacts_language(acme: Workspace) -> None:
    contact = ContactFactory(workspace=acme, locale="de")
    rendered = render("<p>Hallo</p>", contact)
    assert rendered.text.endswith(
        "Datenschutzerklärung: https://example.com/privacy\n"
        f"Abmeldung: {unsubscribe_url(contact)}\n"
    )


def test_the_headers(grace: Contact) -> None:
    # given a message id
    message_id = uuid.UUID("6f1c2d3e-4a5b-4c6d-8e7f-901234567890")

    # when the mail is rendered twice (a redelivery)
    first = render("<p>x</p>", grace, message_id=message_id)
    again = render("<p>x</p>", grace, message_id=message_id)

    # then the headers are the same and exact
    assert first.headers == {
        "List-Unsubscribe": f"<{unsubscribe_url(grace)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Message-ID": "<6f1c2d3e-4a5b-4c6d-8e7f-901234567890@testserver>",
        "X-Funnelwerk-Message": "6f1c2d3e-4a5b-4c6d-8e7f-901234567890",
    }
    assert again.headers == first.headers
    assert "Auto-Submitted" not in first.headers


def test_no_postal_address_no_mail(acme: Workspace, grace: Contact) -> None:
    # given a workspace without a postal address
    acme.postal_address = "  "
    acme.save()
    message = Message.objects.create(workspace=acme, contact=grace, step_key="welcome")
    step = {"key": "welcome", "type": "email", "subject": "Hi", "html": "<p>x</p>"}

    # then neither a rendering nor a mail can be built
    with pytest.raises(ApplicationError) as error:
        render("<p>x</p>", grace)
    assert error.value.message == NO_POSTAL_ADDRESS
    with pytest.raises(ApplicationError) as error:
        message_email(message=Message.objects.get(pk=message.pk), step=step)
    assert error.value.message == NO_POSTAL_ADDRESS
    with pytest.raises(ApplicationError):
        render_preview(step=step, variant=0, contact=None, workspace=acme)


# --- links -------------------------------------------------------------------------------------


def test_the_link_rewriter_skips_unsubscribe_mailto_and_tel(grace: Contact) -> None:
    # given a mail with every kind of link and a rewriter recording its calls
    calls: list[tuple[str, int]] = []

    def rewriter(url: str, position: int) -> str:
        calls.append((url, position))
        return f"https://t.example.com/c/{position}?to={url}"

    html = (
        '<p><a href="https://shop.example.com/a?x=1&amp;y=2">A</a> '
        "<a href='{{ links.unsubscribe_url }}'>Leave</a> "
        '<a href="mailto:hi@example.com">Mail</a> <a href="tel:+4930123">Call</a> '
        '<a HREF = "http://example.com/b">B</a> <span data-href="https://example.com/c">C</span>'
        '<a href="#top">Top</a></p>'
    )

    # when it is rendered
    rendered = render(html, grace, link_rewriter=rewriter)

    # then only the two web links went through the rewriter
    url = unsubscribe_url(grace)
    assert calls == [("https://shop.example.com/a?x=1&y=2", 0), ("http://example.com/b", 1)]
    assert body(rendered) == (
        '<p><a href="https://t.example.com/c/0?to=https://shop.example.com/a?x=1&amp;y=2">A</a> '
        f'<a href="{url}">Leave</a> '
        '<a href="mailto:hi@example.com">Mail</a> <a href="tel:+4930123">Call</a> '
        '<a href="https://t.example.com/c/1?to=http://example.com/b">B</a> '
        '<span data-href="https://example.com/c">C</span><a href="#top">Top</a></p>\n'
    )
    assert rendered.html.count(f'href="{url}"') == 2  # the body's and the footer's
    assert text_body(rendered) == (
        "A (https://shop.example.com/a?x=1&y=2) "
        f"Leave ({url}) Mail (hi@example.com) Call B (http://example.com/b) CTop"
    )


def _recording() -> tuple[list[tuple[str, int]], rendering.LinkRewriter]:
    calls: list[tuple[str, int]] = []

    def rewriter(url: str, position: int) -> str:
        calls.append((url, position))
        return f"https://t.example.com/c/{position}"

    return calls, rewriter


def test_links_made_in_loops_and_branches_are_rewritten_in_document_order(grace: Contact) -> None:
    # given links built from contact data in a loop and in a branch, and an unsubscribe link
    html = (
        "{% for city in ['Köln', 'Wien'] %}"
        '<a href="https://shop.example.com/{{ city }}?p={{ contact.attributes.plan }}">'
        "{{ city }}</a>"
        "{% endfor %}"
        "<a href=\"{% if contact.attributes.plan == 'gold' %}https://gold.example.com"
        '{% else %}https://free.example.com{% endif %}">Plan</a>'
        '<a href="{{ links.unsubscribe_url }}">Leave</a>'
    )
    calls, rewriter = _recording()

    # when it is rendered
    rendered = render(html, grace, link_rewriter=rewriter)

    # then each rendered link went through the rewriter once, counted in document order
    assert calls == [
        ("https://shop.example.com/Köln?p=gold", 0),
        ("https://shop.example.com/Wien?p=gold", 1),
        ("https://gold.example.com", 2),
    ]
    assert body(rendered).startswith(
        '<a href="https://t.example.com/c/0">Köln</a><a href="https://t.example.com/c/1">Wien</a>'
        '<a href="https://t.example.com/c/2">Plan</a>'
        f'<a href="{unsubscribe_url(grace)}">Leave</a>'
    )


def test_contact_data_cannot_smuggle_a_link_past_the_rewriter(
    grace: Contact, acme: Workspace
) -> None:
    # given a contact whose attribute holds markup with a link
    grace.attributes["note"] = '<a href="https://evil.example.com">x</a>'
    calls, rewriter = _recording()

    # when it is printed in the mail
    rendered = render("<p>{{ contact.attributes.note }}</p>", grace, link_rewriter=rewriter)

    # then it is text, not a link
    assert calls == []
    assert "&lt;a href=&#34;https://evil.example.com&#34;&gt;" in body(rendered)


def test_a_link_whose_jinja_spans_the_attribute_is_still_rewritten(grace: Contact) -> None:
    # given hrefs whose if is opened inside one attribute and closed after the next tag
    html = (
        "<a href=\"{% if contact.attributes.plan == 'gold' %}https://vip.example.com\">VIP</a>"
        '{% else %}https://shop.example.com">Shop</a>{% endif %}'
        '<a href="https://shop.example.com/help">Help</a>'
    )
    calls, rewriter = _recording()

    # when it is rendered
    rendered = render(html, grace, link_rewriter=rewriter)

    # then its links went through the rewriter all the same (the rendered mail is scanned)
    assert calls == [("https://vip.example.com", 0), ("https://shop.example.com/help", 1)]
    assert body(rendered).startswith(
        '<a href="https://t.example.com/c/0">VIP</a><a href="https://t.example.com/c/1">Help</a>'
    )


def test_links_in_blocks_and_macros_are_rewritten(grace: Contact) -> None:
    # given links inside a {% block %} and a macro (functions of their own in compiled code)
    html = (
        '{% macro shop(path) %}<a href="https://shop.example.com/{{ path }}">{{ path }}</a>'
        '<a href="https://shop.example.com/static">S</a>{% endmacro %}'
        '{% block intro %}<a href="https://example.com/intro">Intro</a>'
        '<a href="mailto:hi@example.com">Mail</a>{% endblock %}'
        "{{ shop('shoes') }}"
    )
    calls, rewriter = _recording()

    # when it is rendered
    rendered = render(html, grace, link_rewriter=rewriter)

    # then every web link went through the rewriter, in rendering order
    assert calls == [
        ("https://example.com/intro", 0),
        ("https://shop.example.com/shoes", 1),
        ("https://shop.example.com/static", 2),
    ]
    assert body(rendered).startswith(
        '<a href="https://t.example.com/c/0">Intro</a><a href="mailto:hi@example.com">Mail</a>'
        '<a href="https://t.example.com/c/1">shoes</a><a href="https://t.example.com/c/2">S</a>'
    )


def test_a_rewritten_link_is_escaped_in_its_attribute(grace: Contact) -> None:
    # given a rewriter whose URLs carry characters that need escaping in an attribute
    def rewriter(url: str, position: int) -> str:
        return f"https://t.example.com/c?n={position}&to=\"{url}'"

    html = '<a href="https://shop.example.com/a">A</a><a href="{{ contact.attributes.city }}">B</a>'
    grace.attributes["city"] = "https://example.com/<city>"

    # when it is rendered
    rendered = render(html, grace, link_rewriter=rewriter)

    # then the attribute values are escaped, the static and the rendered link alike
    assert body(rendered).startswith(
        '<a href="https://t.example.com/c?n=0&amp;to=&quot;https://shop.example.com/a&#x27;">A</a>'
        '<a href="https://t.example.com/c?n=1&amp;to=&quot;https://example.com/&lt;city&gt;&#x27;">B</a>'
    )


def test_a_literal_link_with_quotes_and_backslashes_is_compiled_as_text(grace: Contact) -> None:
    # given literal hrefs holding what Python source would trip over (the compiled template
    # carries them as string literals)
    html = (
        "<a href='https://shop.example.com/it&#39;s\\x?a=1&amp;b=\"q\"'>A</a>"
        '<a href="mailto:o\'neil@example.com?subject=\\n">M</a>'
    )
    calls, rewriter = _recording()

    # when it is rendered with and without link tracking
    tracked = render(html, grace, link_rewriter=rewriter)
    untracked = render(html, grace)

    # then the web link's target is the unescaped URL, the mailto link stays as written, and
    # untracked both are as the author wrote them, in double quotes (a double quote inside
    # becomes &quot;, the same value)
    assert calls == [('https://shop.example.com/it\'s\\x?a=1&b="q"', 0)]
    assert body(tracked).startswith('<a href="https://t.example.com/c/0">A</a>')
    assert body(untracked).startswith(
        '<a href="https://shop.example.com/it&#39;s\\x?a=1&amp;b=&quot;q&quot;">A</a>'
        '<a href="mailto:o\'neil@example.com?subject=\\n">M</a>'
    )


@pytest.mark.parametrize(
    "text",
    ["", "plain", "a&b", "<script>'x'</script>", '"quoted"', "Köln 🐍 &amp;", "\x00\ue000"],
)
def test_values_are_escaped_as_markupsafe_escapes_them(text: str) -> None:
    # _html_output uses markupsafe's private C function: it must agree with the public escape
    assert rendering._html_output(text) == str(markupsafe.escape(text))


PRINTED_VALUES: list[Any] = [
    None,
    0,
    3.5,
    True,
    "a<b>&\"'",
    markupsafe.Markup("<b>bold</b>"),
    [1, "<x>"],
    {"k": "<v>"},
]


@pytest.mark.parametrize("value", PRINTED_VALUES)
@pytest.mark.parametrize("autoescape", [True, False])
def test_printed_values_are_what_jinja_prints(value: Any, autoescape: bool) -> None:
    # given a template printing a value in several ways, and Jinja's own code generation
    source = (
        "{{ v }}|{{ v|e }}|{{ missing }}|{{ missing.deeper }}|{{ v ~ '<' }}|"
        "{% for x in [v, none] %}{{ x }};{% endfor %}|{% set s %}<{{ v }}>{% endset %}{{ s }}"
    )
    ours = rendering.html_environment if autoescape else rendering.text_environment
    reference = jinja2.Environment(
        autoescape=autoescape,  # noqa: S701 (the text environment's reference is text)
        undefined=rendering._Blank,
        finalize=rendering._finalize,
    )

    # when both render it
    # then the output is the same
    assert ours.from_string(source).render(v=value) == reference.from_string(source).render(v=value)


def test_templates_cannot_switch_escaping_off() -> None:
    with pytest.raises(ApplicationError) as error:
        check_template("<p>\n{% autoescape false %}{{ contact.first_name }}{% endautoescape %}")
    assert error.value.message == "line 2: templates cannot switch escaping off"


def test_the_link_filter_is_not_for_authors() -> None:
    with pytest.raises(ApplicationError) as error:
        check_template("<a href=\"{{ 'https://x.example'|_funnelwerk_link }}\">x</a>")
    assert "_funnelwerk_link" in error.value.message


# --- message_email and the preview -------------------------------------------------------------

STEP: dict[str, Any] = {
    "key": "welcome",
    "type": "email",
    "stage": None,
    "subject": "Welcome {{ contact.first_name }}",
    "html": "<p>A for {{ contact.first_name }}</p>",
    "text": "A text for {{ contact.first_name }}",
    "from_name": "Anna from Acme",
    "variants": [
        {"subject": "B subject", "html": "<p>B</p>", "weight": 1},
        {"subject": "C for {{ contact.first_name }}", "html": "<p>C</p>", "weight": 1},
    ],
    "next": None,
}


def test_message_email_picks_the_variant_and_sets_everything(
    acme: Workspace, grace: Contact
) -> None:
    # given a message of a sequence step for variant 2
    sequence = Sequence.objects.create(workspace=acme, name="Welcome", steps=[STEP])
    enrollment = Enrollment.objects.create(
        workspace=acme, sequence=sequence, contact=grace, current_step="welcome"
    )
    message = Message.objects.create(
        workspace=acme, contact=grace, enrollment=enrollment, step_key="welcome", variant=2
    )
    message = Message.objects.select_related("workspace", "contact", "enrollment__sequence").get(
        pk=message.pk
    )

    # when its mail is built and sent
    email = message_email(message=message, step=STEP)
    email.send()

    # then it carries variant 2, the sender, the parts and the headers
    url = unsubscribe_url(grace)
    assert email.subject == "C for Grace"
    assert email.from_email == "Anna from Acme <news@acme.example>"
    assert email.to == ["grace@example.org"]
    assert email.body.startswith("C\n\n--\nAcme GmbH\n")
    assert email.alternatives[0][1] == "text/html"
    assert str(email.alternatives[0][0]).startswith("<p>C</p>\n" + FOOTER_START)
    assert email.funnelwerk_workspace_id == str(acme.pk)
    sent = mail.outbox[0].message()
    assert sent["Message-ID"] == f"<{message.pk}@testserver>"
    assert sent["List-Unsubscribe"] == f"<{url}>"
    assert sent["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert sent["X-Funnelwerk-Message"] == str(message.pk)
    assert sent["Auto-Submitted"] is None


@pytest.mark.parametrize(
    ("variant", "subject", "text"),
    [(0, "Welcome Grace", "A text for Grace"), (1, "B subject", "B")],
)
def test_message_email_variants(
    acme: Workspace, grace: Contact, variant: int, subject: str, text: str
) -> None:
    message = Message.objects.create(
        workspace=acme, contact=grace, step_key="welcome", variant=variant
    )
    email = message_email(message=message, step=STEP)
    assert email.subject == subject
    assert email.body.split("\n\n--\n")[0] == text


def test_a_missing_variant_is_refused(acme: Workspace, grace: Contact) -> None:
    message = Message.objects.create(workspace=acme, contact=grace, step_key="welcome", variant=3)
    with pytest.raises(ApplicationError) as error:
        message_email(message=message, step=STEP)
    assert error.value.message == "Variant 3 does not exist in step welcome."


def test_the_sender_without_a_from_name(acme: Workspace, grace: Contact) -> None:
    message = Message.objects.create(workspace=acme, contact=grace, step_key="welcome")
    step = {key: value for key, value in STEP.items() if key != "from_name"}
    assert message_email(message=message, step=step).from_email == '"Acme" <news@acme.example>'


def test_the_preview_uses_a_sample_contact(acme: Workspace) -> None:
    step = {
        **STEP,
        "html": "<p>Hi {{ contact.full_name }} ({{ contact.email }}) from "
        "{{ contact.attributes.city }}</p>",
    }
    preview = render_preview(step=step, variant=0, contact=None, workspace=acme)
    assert body(preview) == "<p>Hi Ada Lovelace (ada@example.com) from London</p>\n"
    assert preview.subject == "Welcome Ada"
    assert "Message-ID" not in preview.headers
    assert Contact.objects.filter(email="ada@example.com").exists() is False


def test_the_preview_refuses_a_contact_of_another_workspace(
    acme: Workspace, other_workspace: Workspace
) -> None:
    stranger = ContactFactory(workspace=other_workspace)
    with pytest.raises(ApplicationError) as error:
        render_preview(step=STEP, variant=0, contact=stranger, workspace=acme)
    assert error.value.message == "That contact is not in this workspace."


def test_hrefs_are_normalised_only_inside_tags(grace: Contact) -> None:
    html = "<p>Write href=x or href = 'y' in your <a HREF='https://example.com/h'>link</a></p>"
    rendered = render(html, grace, link_rewriter=lambda url, position: url)
    assert body(rendered) == (
        "<p>Write href=x or href = 'y' in your <a href=\"https://example.com/h\">link</a></p>\n"
    )


def test_a_syntax_error_at_render_time_names_the_part(grace: Contact) -> None:
    with pytest.raises(ApplicationError) as error:
        render("<p>x</p>", grace, subject="Hi {{ contact.first_name")
    assert (
        error.value.message
        == "subject, line 1: unexpected end of template, expected 'end of print statement'."
    )


def test_html_to_text() -> None:
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body>"
        "<h1>Big   news</h1><p>Read <a href='https://example.com/n'>the news</a>"
        " &amp; { braces }</p><table><tr><td>A</td><td>B</td></tr><tr><td>C</td></tr></table>"
        "</body></html>"
    )
    assert rendering.html_to_text(html) == (
        "Big news\n\nRead the news (https://example.com/n) & { braces }\n\nA B\nC"
    )


def test_literal_braces_in_the_html_stay_text(grace: Contact) -> None:
    rendered = render("<p>{ <b></b>{ contact.first_name }} &#123;&#123; 7 * 7 }}</p>", grace)
    assert text_body(rendered) == "{ { contact.first_name }} {{ 7 * 7 }}"

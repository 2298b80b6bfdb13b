"""Rendering of marketing mails authored by workspace users (untrusted templates).

Subject, HTML and text are Jinja2 templates rendered in an immutable sandbox against a plain
context of dicts and strings (never model instances): see template_context. Each template
version is prepared once and cached in-process (_compiled):

- CSS is inlined once per version, into the template source itself. css-inline cannot be run on
  raw Jinja text (it escapes `{% if a > b %}` to `&gt;` and foster-parents `{% for %}` out of
  tables), so Jinja constructs are swapped for opaque placeholders, every start tag gets a marker
  attribute, css-inline runs on that document, and only the computed style of each marked
  element is copied back into the original source. The template stays byte-for-byte what the
  author wrote apart from the added style attributes and the removed <style> blocks (their
  @media rules are kept in one <style>), and its line numbers stay the same.
- The plain-text part is generated once per version as a Jinja template of its own (the
  "skeleton"): the HTML with placeholders is converted to text, links become "label (url)", and
  the placeholders are put back. Per recipient it is just one more render; only when the
  skeleton does not compile is the rendered HTML converted per recipient (html_to_text).

Per recipient, render_email renders the parts, lets a link rewriter (click tracking) replace
http(s) links other than the unsubscribe link, and appends the footer we own: the workspace's
name, postal address, privacy policy and a visible unsubscribe link, so a mail without an
unsubscribe possibility cannot be built. bench/render.py measures the cost per recipient.
"""

from __future__ import annotations

import contextvars
import functools
import html as html_lib
import logging
import re
import traceback
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.headerregistry import Address
from email.utils import parseaddr
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import css_inline
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _
from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.defaults import DEFAULT_FILTERS
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace
from markupsafe import escape as markup_escape

from contacts.mails import sender_of
from contacts.models import Contact
from contacts.subscriptions import unsubscribe_url
from core.exceptions import ApplicationError
from core.languages import first_supported_language
from core.mail import MultipartEmail, tag_workspace
from core.models import Workspace

if TYPE_CHECKING:
    from campaigns.models import Message
    from campaigns.tracking_links import MailTracking

logger = logging.getLogger(__name__)

LinkRewriter = Callable[[str, int], str]
"""(original URL, 0-based position among the rewritten links) -> the URL to put in the mail."""

MAX_RANGE = 1_000
MAX_REPEAT = 10_000
MAX_POWER = 100
MAX_DATE_FORMAT = 64

# --- the sandbox --------------------------------------------------------------------------------


class _Blank(ChainableUndefined):
    """Missing values render as empty and chain (`contact.attributes.a.b` is empty too).

    An undefined made by the sandbox for a refused attribute (`x.__class__`) still prints empty,
    but going further through it (`x.__class__.__mro__`, calling it) raises SecurityError.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()
        return self

    def __getitem__(self, key: Any) -> Any:
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()
        return self


def _finalize(value: Any) -> Any:
    # A JSON null prints as nothing, not as "None".
    return "" if value is None else value


def _escape_markupsafe(text: str) -> str:
    return str(markup_escape(text))


_escape_str: Callable[[str], str] = _escape_markupsafe
try:
    # markupsafe's C escaping of a str, without wrapping the result in Markup: that wrapper is
    # a Python-level constructor and costs ten times the escaping of a short value. Private to
    # markupsafe: tests/campaigns/test_rendering.py checks it escapes as markupsafe.escape.
    from markupsafe._speedups import _escape_inner

    _escape_str = _escape_inner
except ImportError:  # pragma: no cover (markupsafe without its C extension, or renamed)
    pass


def _html_output(value: Any) -> str:
    """What `{{ value }}` prints in HTML: _finalize and escape in one call (see
    _MailCodeGenerator). Exactly what Jinja's escape(finalize(value)) prints."""
    if type(value) is str:
        return _escape_str(value)
    if value is None:
        return ""
    return markup_escape(value)


def _text_output(value: Any) -> str:
    """What `{{ value }}` prints in the subject and text part: _finalize and str in one call."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    return str(value)


_LINK_FILTER = "_funnelwerk_link"
"""The filter compiled mail HTML wraps around every href value (see _compiled_html)."""


class _MailCodeGenerator(CodeGenerator):
    """Jinja's code generator, with what runs for every value and link of every mail made
    cheaper (bench/render.py):

    - `a.b` calls the sandbox's getattr bound once per function (visit_Getattr).
    - A printed value goes through one call, the environment's funnelwerk_output
      (_html_output: finalize and escape; _text_output), instead of
      escape(environment.finalize(value)), whose Markup wrapper costs more than the escaping.
    - The link filter blocks of compiled mail HTML (_compiled_html): a block around literal
      text (href="https://...") becomes one call with the link's target worked out here, once
      per template: _tracked_static_link(url, value); one around a value that is no http(s)
      link (mailto:, #top) becomes that text. Around rendered values, the filter gets the
      joined text as it is: Jinja would first make it Markup (a Python-level constructor per
      link) although the filter's result is written out as it is anyway.
    Any other filter block is generated as Jinja does it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._output = self.temporary_identifier()
        self._getattr = self.temporary_identifier()
        self._static_link = self.temporary_identifier()

    def visit_FilterBlock(self, node: nodes.FilterBlock, frame: Frame) -> None:
        if node.filter.name != _LINK_FILTER or not all(
            isinstance(child, nodes.Output)
            and all(isinstance(data, nodes.TemplateData) for data in child.nodes)
            for child in node.body
        ):
            super().visit_FilterBlock(node, frame)
            return
        value = "".join(
            data.data
            for child in node.body
            for data in child.nodes  # type: ignore[attr-defined]
        )
        if not value:
            return
        url = _link_target(value)
        self.start_write(frame, node)
        if url:
            self.write(f"{self._static_link}({url!r}, {value!r})")
        else:
            self.write(repr(value))
        self.end_write(frame)

    def visit_Filter(self, node: nodes.Filter, frame: Frame) -> None:
        if node.name == _LINK_FILTER and node.node is None and frame.buffer is not None:
            self.write(f"{self.filters[_LINK_FILTER]}(concat({frame.buffer}))")
            return
        super().visit_Filter(node, frame)

    def pull_dependencies(self, nodes_: Iterable[nodes.Node]) -> None:
        # Called at the start of the template's body and of each {% block %}, each a function
        # of its own: bind the output function (and the static link filter) there too.
        super().pull_dependencies(nodes_)
        self.writeline(f"{self._output} = environment.funnelwerk_output")
        self.writeline(f"{self._getattr} = environment.getattr")
        if _LINK_FILTER in self.filters:
            self.writeline(f"{self._static_link} = environment.funnelwerk_static_link")

    @optimizeconst
    def visit_Getattr(self, node: nodes.Getattr, frame: Frame) -> None:
        # `contact.first_name`: the sandbox's getattr bound once per function, not looked up
        # on the environment at every use (our environments are not async).
        self.write(f"{self._getattr}(")
        self.visit(node.node, frame)
        self.write(f", {node.attr!r})")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        # One call instead of escape(environment.finalize(...)): the output function does
        # both (_html_output, _text_output).
        if frame.eval_ctx.volatile:
            super()._output_child_pre(node, frame, finalize)
        else:
            self.write(f"{self._output}(")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if frame.eval_ctx.volatile:
            super()._output_child_post(node, frame, finalize)
        else:
            self.write(")")


class _MailSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox (templates cannot change the context they are given) that also
    refuses the cheap ways to exhaust memory: huge repetitions and powers."""

    intercepted_binops = frozenset({"*", "**"})
    code_generator_class = _MailCodeGenerator
    # Read by _MailCodeGenerator's generated code (not reachable from templates, which never
    # see the environment): how printed values are written, and the static link filter.
    funnelwerk_output: Callable[[Any], str] = staticmethod(_html_output)
    funnelwerk_static_link: Callable[[str, str], str] | None = None

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The context is plain dicts: look the key up first. Jinja tries the attribute first
        # and pays for an AttributeError on every `contact.first_name`; here a key also wins
        # over a dict method of the same name (an attribute called "items" just works).
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_POWER:
            raise SecurityError(f"exponents above {MAX_POWER} are not allowed")
        if operator == "*":
            for repeated, times in ((left, right), (right, left)):
                if (
                    isinstance(repeated, str | list | tuple)
                    and isinstance(times, int)
                    and len(repeated) * times > MAX_REPEAT
                ):
                    raise SecurityError(f"results longer than {MAX_REPEAT} are not allowed")
        return super().call_binop(context, operator, left, right)


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise OverflowError(f"range() gives at most {MAX_RANGE} numbers")
    return numbers


def _default_filter(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Like Jinja's `default`, but a blank string counts as missing too: an empty first name
    should fall back to "there" just like an absent one."""
    if type(value) is str:
        return value if value and not value.isspace() else default_value
    if isinstance(value, Undefined) or value is None:
        return default_value
    if boolean and not value:
        return default_value
    return value


_FORMAT_WIDTH = re.compile(r"%[-_0^#]*\d")


def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name) if name else None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


@pass_context
def _date_filter(context: Context, value: Any, pattern: str = "%Y-%m-%d") -> str:
    """Format a datetime, date or ISO 8601 string; datetimes in the contact's time zone."""
    if not isinstance(pattern, str) or len(pattern) > MAX_DATE_FORMAT:
        raise SecurityError(f"a date format has at most {MAX_DATE_FORMAT} characters")
    if _FORMAT_WIDTH.search(pattern):
        raise SecurityError("widths in date formats (like %10Y) are not allowed")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return ""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        contact = context.get("contact")
        zone = _zone(contact.get("timezone", "")) if isinstance(contact, dict) else None
        value = value.astimezone(zone or UTC)
    elif not isinstance(value, date):
        return ""
    return value.strftime(pattern)


SAFE_FILTERS = (
    "capitalize",
    "e",
    "escape",
    "first",
    "int",
    "join",
    "last",
    "length",
    "lower",
    "replace",
    "round",
    "title",
    "trim",
    "truncate",
    "upper",
    "urlencode",
)


def _environment(*, autoescape: bool) -> _MailSandbox:
    environment = _MailSandbox(autoescape=autoescape, undefined=_Blank, finalize=_finalize)
    environment.funnelwerk_output = _html_output if autoescape else _text_output
    # An allow-list: no `safe` (contact data must stay escaped), no `attr`, `format`, `map`.
    environment.filters = {name: DEFAULT_FILTERS[name] for name in SAFE_FILTERS}
    environment.filters.update(default=_default_filter, d=_default_filter, date=_date_filter)
    environment.globals = {
        "range": _bounded_range,
        "dict": dict,
        "namespace": Namespace,
        "cycler": Cycler,
        "joiner": Joiner,
    }
    return environment


html_environment = _environment(autoescape=True)
"""For HTML: everything printed is escaped."""
text_environment = _environment(autoescape=False)
"""For the subject and the plain-text part: printed as it is."""


@dataclass(slots=True)
class _LinkTracking:
    """The link rewriting of the mail being rendered: its rewriter, the link it leaves alone
    (unsubscribe) and the position of the next rewritten link."""

    rewriter: LinkRewriter
    keep: str
    position: int = 0


# Set by render_email around the HTML render; not reachable from templates.
_link_tracking: contextvars.ContextVar[_LinkTracking | None] = contextvars.ContextVar(
    "funnelwerk_link_tracking", default=None
)


def _attribute_value(url: str) -> str:
    """A rewritten URL as an href value: escaped where it needs it (the click tracking's URLs
    never do; the `in` tests cost a tenth of a regular expression search)."""
    if "&" in url or '"' in url or "<" in url or ">" in url or "'" in url:
        return html_lib.escape(url, quote=True)
    return url


def _tracked(tracking: _LinkTracking, url: str) -> str:
    """The rewritten `url` as an attribute value."""
    new_url = tracking.rewriter(url, tracking.position)
    tracking.position += 1
    return _attribute_value(new_url)


def _tracked_link(value: str) -> str:
    """The filter around every href value with Jinja in it (see _compiled_html and
    _MailCodeGenerator): `value` is the rendered attribute value (HTML, escaped), rewritten by
    the current mail's link rewriter when it is an http(s) link other than the unsubscribe
    link. Positions count in rendering order, which is document order but for links rendered
    ahead of their place ({% set %} blocks, macros)."""
    tracking = _link_tracking.get()
    if tracking is None:
        return value
    url = value
    if "&" in url or not url.startswith(("https://", "http://")):
        url = _link_target(url)
    if not url or url == tracking.keep:
        return value
    return _tracked(tracking, url)


def _tracked_static_link(url: str, value: str) -> str:
    """The same for an href value without Jinja: `url` is its http(s) target, found once when
    the template was compiled, `value` the attribute value as written."""
    tracking = _link_tracking.get()
    if tracking is None or url == tracking.keep:
        return value
    return _tracked(tracking, url)


mail_html_environment = _environment(autoescape=True)
"""For compiled mail HTML: html_environment and the link filters (authors' templates are
checked against html_environment, so the filters are not theirs to use)."""
mail_html_environment.filters[_LINK_FILTER] = _tracked_link
mail_html_environment.funnelwerk_static_link = _tracked_static_link

_FORBIDDEN_NODES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def _compile(source: str, *, env: _MailSandbox) -> Template:
    """Compile one template; raise ApplicationError naming the line of a syntax error."""
    try:
        tree = env.parse(source)
        for node in tree.find_all(_FORBIDDEN_NODES):
            raise ApplicationError(
                _("line %(line)d: templates cannot include or import other templates")
                % {"line": node.lineno}
            )
        for node in tree.find_all(nodes.EvalContextModifier):
            # {% autoescape false %} would print contact data as markup (and its links past
            # the click tracking): what contacts type stays text.
            raise ApplicationError(
                _("line %(line)d: templates cannot switch escaping off") % {"line": node.lineno}
            )
        return env.from_string(tree)
    except TemplateSyntaxError as exc:
        raise ApplicationError(f"line {exc.lineno}: {exc.message}") from exc


def check_template(source: str) -> None:
    """Raise ApplicationError naming the line when `source` is not a valid template (syntax,
    unknown filters, include/import)."""
    _compile(source, env=html_environment)


def _template_line(exc: BaseException) -> int | None:
    # Jinja rewrites the traceback so that template frames carry the template's line numbers.
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == "<template>":
            line = lineno
    return line


def _render(template: Template, context: dict[str, Any], *, part: str) -> str:
    """template.render(context), without its per-render copy of the globals into the context
    (a third of a short render: bench/render.py); an error names the part and line."""
    environment = template.environment
    try:
        try:
            return environment.concat(
                template.root_render_func(
                    template.new_context({**environment.globals, **context}, shared=True)
                )
            )
        except Exception:
            # As Template.render does: the traceback then holds the template's line numbers.
            environment.handle_exception()
    except Exception as exc:
        # Whatever an untrusted template does wrong (refused attribute, 1/0, calling something
        # undefined) becomes a message for the author; nothing else escapes the sandbox.
        line = _template_line(exc)
        where = f"{part}, line {line}" if line else part
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, SecurityError):
            raise ApplicationError(
                _("%(where)s: not allowed in a template: %(reason)s")
                % {"where": where, "reason": reason}
            ) from exc
        raise ApplicationError(f"{where}: {reason}") from exc


# --- the context --------------------------------------------------------------------------------


def _tag_names(contact: Contact) -> list[str]:
    if contact._state.adding:
        return []
    prefetched = getattr(contact, "_prefetched_objects_cache", {})
    if "tags" in prefetched:
        return sorted(tag.name for tag in prefetched["tags"])
    return list(contact.tags.order_by("name").values_list("name", flat=True))


def template_context(
    *, contact: Contact, workspace: Workspace, message: Message | None = None
) -> dict[str, Any]:
    """The plain context templates see: dicts, lists and strings only, so the sandbox has no
    model, manager or setting to reach through.

    Tags come from `prefetch_related("tags")` when the caller did it (one query otherwise; none
    for an unsaved contact). `message` is reserved for per-message links (view in browser).
    """
    unsubscribe = unsubscribe_url(contact)
    return {
        "contact": {
            "email": contact.email,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "full_name": contact.full_name,
            "locale": contact.locale or workspace.locale,
            "timezone": contact.timezone or workspace.timezone,
            "attributes": dict(contact.attributes or {}),
            "tags": _tag_names(contact),
        },
        "workspace": {
            "name": workspace.name,
            "postal_address": workspace.postal_address,
            "privacy_policy_url": workspace.privacy_policy_url,
            "sender_name": workspace.sender_name or workspace.name,
        },
        "links": {"unsubscribe_url": unsubscribe, "preferences_url": unsubscribe},
    }


def sample_contact(workspace: Workspace) -> Contact:
    """An unsaved contact for previews without a real one."""
    return Contact(
        workspace=workspace,
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        attributes={"city": "London"},
    )


# --- placeholders for Jinja constructs ----------------------------------------------------------

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters, removed from sources beforehand
_JINJA = re.compile(
    r"(\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\})|\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S
)
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
_CLOSING_STATEMENT = re.compile(r"\{%[-+]?\s*(end\w*|else|elif)\b")


@dataclass(frozen=True, slots=True)
class _Protected:
    """A template source with every Jinja construct replaced by an opaque placeholder."""

    text: str
    fragments: list[str]
    statements: frozenset[int]  # the {% ... %} fragments (they print nothing themselves)
    closing: frozenset[int]  # the statements that end or continue a block: endfor, else, ...

    def restore(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda match: self.fragments[int(match.group(1))], text)


def _protect(source: str) -> _Protected:
    fragments: list[str] = []
    statements: set[int] = set()
    closing: set[int] = set()

    def swap(match: re.Match[str]) -> str:
        fragment = match.group(0)
        if fragment.startswith("{%") and match.group(1) is None:
            statements.add(len(fragments))
            if _CLOSING_STATEMENT.match(fragment):
                closing.add(len(fragments))
        fragments.append(fragment)
        return f"{_OPEN}{len(fragments) - 1}{_CLOSE}"

    text = _JINJA.sub(swap, source.replace(_OPEN, "").replace(_CLOSE, ""))
    return _Protected(
        text=text,
        fragments=fragments,
        statements=frozenset(statements),
        closing=frozenset(closing),
    )


# --- CSS inlining, once per template version ----------------------------------------------------

_INLINER = css_inline.CSSInliner(
    keep_style_tags=False,
    keep_at_rules=True,
    # Untrusted templates must not make the server fetch URLs (<link rel=stylesheet>, @import).
    load_remote_stylesheets=False,
)
_MARKER = "data-fw-inline-id"
_MARKUP = re.compile(
    r"<!--.*?-->"
    r"|<(?P<raw>script|style)\b[^>]*>.*?</(?P=raw)\s*>"
    r"|<(?P<tag>[a-zA-Z][^\s/>]*)"
    r"(?P<attrs>(?:\s+[^\s\"'>/=]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?)*)"
    r"\s*(?P<slash>/?)>",
    re.S | re.I,
)
_ATTRIBUTE = re.compile(
    r"\s+(?P<name>[^\s\"'>/=]+)(?:\s*=\s*(?P<value>\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?"
)
_OUTPUT_TAG = re.compile(r"<[a-zA-Z][^\s/>]*((?:\s+[^\s=/>]+(?:=\"[^\"]*\")?)*)\s*/?>")
_OUTPUT_MARKER = re.compile(rf'\s{_MARKER}="(\d+)"')
_OUTPUT_STYLE = re.compile(r'\sstyle="([^"]*)"')
_OUTPUT_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.S | re.I)


@dataclass(slots=True)
class _StartTag:
    start: int
    end: int
    name: str
    attrs: str  # without the style attribute
    style: str | None  # the original style attribute's value, quotes included
    slash: str


def _inline_css(text: str) -> str:
    """Copy the styles of the <style> blocks onto the elements of a protected source."""
    if "<style" not in text.lower():
        return text
    marked: list[str] = []
    tags: list[_StartTag] = []
    style_blocks: list[tuple[int, int]] = []
    position = 0
    for match in _MARKUP.finditer(text):
        marked.append(text[position : match.start()])
        position = match.end()
        if match.group("raw"):
            if match.group("raw").lower() == "style":
                style_blocks.append((match.start(), match.end()))
            marked.append(match.group(0))
        elif match.group("tag"):
            attrs, style = [], None
            for attribute in _ATTRIBUTE.finditer(match.group("attrs")):
                if attribute.group("name").lower() == "style":
                    style = attribute.group("value")
                else:
                    attrs.append(attribute.group(0))
            tag = _StartTag(
                start=match.start(),
                end=match.end(),
                name=match.group("tag"),
                attrs="".join(attrs),
                style=style,
                slash=match.group("slash"),
            )
            # The element's own style attribute is left out here and appended after the
            # computed one below, so it still wins; css-inline chokes on placeholders in it.
            marked.append(f'<{tag.name} {_MARKER}="{len(tags)}"{tag.attrs}{tag.slash}>')
            tags.append(tag)
        else:
            marked.append(match.group(0))
    marked.append(text[position:])
    try:
        inlined = _INLINER.inline("".join(marked))
    except css_inline.InlineError as exc:
        logger.warning("CSS left as it is, it could not be inlined: %s", exc)
        return text
    computed: dict[int, str] = {}
    for output_tag in _OUTPUT_TAG.finditer(inlined):
        marker = _OUTPUT_MARKER.search(output_tag.group(1))
        style = _OUTPUT_STYLE.search(output_tag.group(1))
        if marker and style and style.group(1).strip():
            computed[int(marker.group(1))] = style.group(1).strip()
    kept_rules = " ".join(
        block.strip() for block in _OUTPUT_STYLE_BLOCK.findall(inlined) if block.strip()
    )
    edits: list[tuple[int, int, str]] = []
    for index, tag in enumerate(tags):
        if index not in computed:
            continue
        style = computed[index]
        if tag.style is None:
            replacement = f'<{tag.name}{tag.attrs} style="{style}"{tag.slash}>'
        else:
            quote = tag.style[0] if tag.style[0] in "\"'" else '"'
            own = tag.style[1:-1] if tag.style[0] in "\"'" else tag.style
            if quote == "'":
                style = style.replace("'", "&#39;")
            separator = "" if style.endswith(";") else ";"
            replacement = f"<{tag.name}{tag.attrs} style={quote}{style}{separator}{own}{quote}"
            replacement += f"{tag.slash}>"
        edits.append((tag.start, tag.end, replacement))
    for number, (start, end) in enumerate(style_blocks):
        # Removed blocks leave their newlines behind so template line numbers stay the same.
        newlines = "\n" * text.count("\n", start, end)
        rules = f"<style>{kept_rules}</style>" if number == 0 and kept_rules else ""
        edits.append((start, end, rules.replace("\n", " ") + newlines))
    pieces, position = [], 0
    for start, end, replacement in sorted(edits):
        pieces.append(text[position:start])
        pieces.append(replacement)
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


# --- the plain-text part ------------------------------------------------------------------------

_PARAGRAPH_TAGS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "table", "hr", "pre"}
    | {"address", "dl", "figure"}
)
_LINE_TAGS = frozenset(
    {"div", "tr", "li", "section", "article", "header", "footer", "main", "nav", "aside"}
    | {"center", "dt", "dd", "thead", "tbody", "tfoot", "caption", "figcaption", "form"}
)
_SKIPPED_TAGS = frozenset({"head", "style", "script", "title", "template"})
_WHITESPACE = re.compile(r"\s+")
# Written so that each starts with a literal: the regex engine then skips ahead with a fast
# search instead of trying every position (r"\n{3,}" is eight times slower than this).
_BLANK_LINES = re.compile("\n\n\n+")
_LINE_START_SPACE = re.compile("\n[ \t]+")
_LINE_END_SPACE = re.compile("[ \t]+\n")


class _TextWriter(HTMLParser):
    """HTML to readable text: paragraphs kept, whitespace collapsed, links as "label (url)".

    With a protected source it writes a text template: placeholders of Jinja constructs stay
    where they were, and statements found in dropped places (attributes, <head>) are kept so
    that blocks stay balanced.
    """

    def __init__(self, protected: _Protected | None = None) -> None:
        super().__init__(convert_charrefs=True)
        self._protected = protected
        self._pieces: list[str] = []
        self._pending_break = 0
        self._line_start = True
        self._skip_depth = 0
        self._link: tuple[str, list[str]] | None = None

    def text(self) -> str:
        self.close()
        if self._link is not None:
            self._end_link()
        return "".join(self._pieces)

    def _statements(self, text: str, *, keep_text: bool = False) -> None:
        """Write the statements in `text` (and, with `keep_text`, the text between them);
        without `keep_text` the text is dropped (an attribute, <head>) but its statements
        stay so that blocks remain balanced."""
        position = 0
        if self._protected is not None and _OPEN in text:
            for match in _PLACEHOLDER.finditer(text):
                index = int(match.group(1))
                if index in self._protected.statements:
                    if keep_text:
                        self._write(_WHITESPACE.sub(" ", text[position : match.start()]))
                    self._statement(match.group(0), closing=index in self._protected.closing)
                    position = match.end()
        if keep_text:
            self._write(_WHITESPACE.sub(" ", text[position:]))

    def _statement(self, placeholder: str, *, closing: bool) -> None:
        if self._link is not None:
            self._link[1].append(placeholder)
            return
        # A line break pending before a block goes before it; one pending at its end stays
        # pending after it. So a loop over rows repeats one break per row, not two.
        if not closing and self._pending_break:
            if self._pieces:
                self._pieces[-1] = self._pieces[-1].rstrip(" ")
                self._pieces.append("\n" * self._pending_break)
            self._pending_break = 0
            self._line_start = True
        self._pieces.append(placeholder)

    def _write(self, text: str) -> None:
        if self._link is not None:
            self._link[1].append(text)
            return
        if self._line_start or self._pending_break or self._pieces[-1].endswith(" "):
            text = text.lstrip(" ")
        if not text:
            return
        if self._pending_break:
            if self._pieces:
                self._pieces[-1] = self._pieces[-1].rstrip(" ")
                self._pieces.append("\n" * self._pending_break)
            self._pending_break = 0
        self._pieces.append(text)
        self._line_start = False

    def _break(self, lines: int) -> None:
        if self._link is not None:
            self._link[1].append(" ")
        else:
            self._pending_break = max(self._pending_break, lines)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag == "body":
            self._skip_depth = 0
        values = dict(attrs)
        kept = {"href"} if tag == "a" else {"alt"} if tag == "img" else set()
        for name, value in attrs:
            self._statements(name)
            if value and name not in kept:
                self._statements(value)
        if self._skip_depth:
            return
        if tag == "a":
            if self._link is not None:
                self._end_link()
            self._link = ((values.get("href") or "").strip(), [])
        elif tag == "img" and self._link is not None and values.get("alt"):
            self._write(f" {values['alt']} ")
        elif tag == "br":
            if self._link is not None:
                self._link[1].append(" ")
            else:
                self._pending_break = min(self._pending_break + 1, 2)
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)
            if tag == "li":
                self._write("- ")
        elif tag in ("td", "th"):
            self._write(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(self._skip_depth - 1, 0)
            return
        if self._skip_depth:
            return
        if tag == "a" and self._link is not None:
            self._end_link()
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)

    def _end_link(self) -> None:
        assert self._link is not None
        href, label_pieces = self._link
        self._link = None
        label = " ".join("".join(label_pieces).split())
        lowered = href.lower()
        if lowered.startswith(("http://", "https://", _OPEN)):
            text = href if not label or label == href else f"{label} ({href})"
        elif lowered.startswith("mailto:"):
            address = href[len("mailto:") :].split("?")[0]
            text = address if not label or label == address else f"{label} ({address})"
        else:
            text = label
        if text:
            self._write(text)

    def handle_data(self, data: str) -> None:
        self._statements(data, keep_text=not self._skip_depth)

    def handle_comment(self, data: str) -> None:
        self._statements(data)


def _tidy_text(text: str, *, spaces: bool = True) -> str:
    """Keep at most one blank line (loops leave more) and, with `spaces`, strip spaces
    around line ends. The rendered skeleton needs only the first: its literal text is tidy
    already, and this runs per recipient."""
    if spaces:
        text = _LINE_START_SPACE.sub("\n", _LINE_END_SPACE.sub("\n", text))
    return _BLANK_LINES.sub("\n\n", text).strip()


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML mail (links as "label (url)")."""
    writer = _TextWriter()
    writer.feed(html)
    return _tidy_text(writer.text())


def _text_skeleton(protected: _Protected) -> str:
    """The text template of a protected HTML source: literal braces are quoted so that text
    like "{ {" in the HTML can never turn into Jinja syntax."""
    writer = _TextWriter(protected)
    writer.feed(protected.text)
    return protected.restore(_tidy_text(writer.text()).replace("{", "{{ '{' }}"))


# --- compiled templates, cached per version -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CompiledEmail:
    subject: Template | str  # a str: no Jinja in it, nothing to render
    html: Template
    text: Template | None  # None: convert the rendered HTML per recipient
    text_generated: bool
    # True: every href value goes through the link filter while rendering; False (a source
    # whose Jinja cannot be wrapped that way): the rendered HTML is scanned for links.
    links_in_template: bool


@functools.lru_cache(maxsize=256)
def _compiled(
    cache_key: tuple[Any, ...] | None, subject: str, html: str, text: str | None
) -> _CompiledEmail:
    """Compile the parts of one mail: CSS inlined and the text skeleton generated, once.

    The cache is keyed by `cache_key` (sequence, version, step, variant) and the sources
    themselves, so a stale key can never serve other content.
    """
    protected = _protect(html)
    html_template, links_in_template = _compiled_html(protected)
    text_template: Template | None
    if text is not None and text.strip():
        text_template = _compile_part(text, env=text_environment, part="text")
    else:
        try:
            text_template = _compile(_text_skeleton(protected), env=text_environment)
        except ApplicationError as exc:
            logger.info("Text part converted per recipient, the skeleton failed: %s", exc)
            text_template = None
    return _CompiledEmail(
        subject=(
            _compile_part(subject, env=text_environment, part="subject")
            if "{" in subject
            else subject
        ),
        html=html_template,
        text=text_template,
        text_generated=not (text and text.strip()),
        links_in_template=links_in_template,
    )


def _compiled_html(protected: _Protected) -> tuple[Template, bool]:
    """The HTML template with CSS inlined and every href value wrapped in the link filter:
    href="{% filter _funnelwerk_link %}...{% endfilter %}". The link tracking then costs one
    filter call per link while rendering instead of a scan of the whole rendered mail per
    recipient (bench/render.py). Autoescaping keeps contact data from adding links of its
    own, so the source's href attributes are all the links there are. A source whose Jinja
    cannot be wrapped (a statement opened in one href value and closed outside it) is compiled
    as written; its links are found by the scan. Returns (template, whether wrapped)."""
    fragments = [*protected.fragments, f"{{% filter {_LINK_FILTER} %}}", "{% endfilter %}"]
    wrapped = _Protected(protected.text, fragments, protected.statements, protected.closing)
    opening = f"{_OPEN}{len(fragments) - 2}{_CLOSE}"
    closing = f"{_OPEN}{len(fragments) - 1}{_CLOSE}"
    try:
        inlined = _inline_css(_normalise_hrefs(protected.text, (opening, closing)))
        return _compile(wrapped.restore(inlined), env=mail_html_environment), True
    except ApplicationError:
        inlined = _inline_css(_normalise_hrefs(protected.text))
        return _compile_part(protected.restore(inlined), env=html_environment, part="HTML"), False


def _compile_part(source: str, *, env: _MailSandbox, part: str) -> Template:
    try:
        return _compile(source, env=env)
    except ApplicationError as exc:
        raise ApplicationError(f"{part}, {exc.message}") from exc


# --- links, footer, headers ---------------------------------------------------------------------

_SOURCE_HREF = re.compile(r"""(?<=\s)href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""", re.I)
_ATTRIBUTE_START = frozenset(" \t\n\r\f")


def _normalise_hrefs(text: str, wrap: tuple[str, str] = ("", "")) -> str:
    """Write every href attribute of a protected source as href="..." (lower case, double
    quotes), its value between the two parts of `wrap` (the placeholders of the link filter's
    {% filter %} and {% endfilter %}, see _compiled)."""
    opening, closing = wrap

    def quoted(match: re.Match[str]) -> str:
        # A double quote in a single-quoted value is written as &quot; (the same value once
        # parsed). Jinja in the value is a placeholder here, its own quotes are untouched.
        value = match.group(1) or (match.group(2) or "").replace('"', "&quot;") or match.group(3)
        return f'href="{opening}{value or ""}{closing}"'

    def normalise(tag: re.Match[str]) -> str:
        attrs = tag.group("attrs")
        if not tag.group("tag") or not attrs or "href" not in attrs.lower():
            return tag.group(0)
        start, end = tag.start("attrs") - tag.start(), tag.end("attrs") - tag.start()
        whole = tag.group(0)
        return whole[:start] + _SOURCE_HREF.sub(quoted, attrs) + whole[end:]

    return _MARKUP.sub(normalise, text)


def _link_target(value: str) -> str:
    """The http(s) URL of a rendered href value (HTML-escaped), else ""."""
    url = value
    if "&" in url:
        # Jinja escapes & as &amp;; anything else (&#39;, &lt;) takes the full unescape.
        bare = url.replace("&amp;", "&")
        url = html_lib.unescape(url) if "&" in url.replace("&amp;", "") else bare
    if not url.startswith(("https://", "http://")):
        url = url.strip()
        if not url[:8].lower().startswith(("https://", "http://")):
            url = ""
    return url


def _rewrite_links(html: str, rewriter: LinkRewriter, *, keep: str) -> str:
    """Replace the http(s) hrefs of rendered HTML by what `rewriter` returns, except `keep`
    (the unsubscribe link), mailto:, tel: and the like.

    Runs per recipient: str.split finds the hrefs (the compiled template writes every one as
    href="..."), several times faster than a regex scan over 20-30 KB.
    """
    pieces = html.split('href="')
    if len(pieces) == 1:
        return html
    result = [pieces[0]]
    previous = pieces[0]
    position = 0
    for piece in pieces[1:]:
        end = piece.find('"')
        # A real attribute follows whitespace: data-href="..." stays as it is.
        if end < 0 or previous[-1:] not in _ATTRIBUTE_START:
            result.append('href="')
            result.append(piece)
            previous = piece
            continue
        previous = piece
        value = piece[:end]
        url = _link_target(value)
        if not url or url == keep:
            new_value = value
        else:
            new_value = _attribute_value(rewriter(url, position))
            position += 1
        result.append('href="')
        result.append(new_value)
        result.append(piece[end:])
    return "".join(result)


@functools.lru_cache(maxsize=16)
def _footer_labels(language: str) -> tuple[str, str]:
    with translation.override(language):
        return _("Unsubscribe"), _("Privacy policy")


def _language(contact: Contact, workspace: Workspace) -> str:
    # No database read here (unlike contacts.mails.contact_language): this runs per recipient.
    return first_supported_language(contact.locale, workspace.locale)


def _footers(*, workspace: Workspace, unsubscribe: str, language: str) -> tuple[str, str]:
    """The footer we append to every marketing mail: (HTML, text)."""
    html_footer, text_footer = _footer_templates(
        workspace.name, workspace.postal_address, workspace.privacy_policy_url, language
    )
    return (
        html_footer.replace(_UNSUBSCRIBE_SLOT, html_lib.escape(unsubscribe)),
        text_footer.replace(_UNSUBSCRIBE_SLOT, unsubscribe),
    )


# Where the footer's unsubscribe link goes: a private-use character, which no name, address or
# URL of a workspace can hold (the footer is built once per workspace and language).
_UNSUBSCRIBE_SLOT = "\ue002"


@functools.lru_cache(maxsize=256)
def _footer_templates(
    name: str, postal_address: str, privacy: str, language: str
) -> tuple[str, str]:
    unsubscribe_label, privacy_label = _footer_labels(language)
    name = name.replace(_UNSUBSCRIBE_SLOT, "")
    address_lines = [
        line.strip().replace(_UNSUBSCRIBE_SLOT, "")
        for line in postal_address.splitlines()
        if line.strip()
    ]
    privacy = privacy.replace(_UNSUBSCRIBE_SLOT, "")
    link_style = "color:#666666;text-decoration:underline"
    html_links = (
        f'<a href="{_UNSUBSCRIBE_SLOT}" style="{link_style}">'
        f"{html_lib.escape(unsubscribe_label)}</a>"
    )
    if privacy:
        html_links += (
            f' &middot; <a href="{html_lib.escape(privacy)}" style="{link_style}">'
            f"{html_lib.escape(privacy_label)}</a>"
        )
    html_footer = (
        '<div class="funnelwerk-footer" style="margin:32px 0 0 0;padding:16px 0 0 0;'
        "border-top:1px solid #dddddd;font-family:Arial,sans-serif;font-size:12px;"
        'line-height:18px;color:#666666;text-align:center">'
        f'<p style="margin:0 0 8px 0">{html_lib.escape(name)}<br>'
        f"{'<br>'.join(html_lib.escape(line) for line in address_lines)}</p>"
        f'<p style="margin:0">{html_links}</p></div>'
    )
    text_lines = ["--", name, *address_lines]
    if privacy:
        text_lines.append(f"{privacy_label}: {privacy}")
    text_lines.append(f"{unsubscribe_label}: {_UNSUBSCRIBE_SLOT}")
    return html_footer, "\n".join(text_lines)


def _insert_after_body(html: str, snippet: str) -> str:
    start = html.find("<body")
    if start < 0:
        start = html.lower().find("<body")
    end = html.find(">", start) if start >= 0 else -1
    if end < 0:
        return f"{snippet}{html}"
    return f"{html[: end + 1]}{snippet}{html[end + 1 :]}"


def _append_html_footer(html: str, footer: str) -> str:
    end = html.rfind("</body>")
    if end < 0:
        end = html.lower().rfind("</body>")
    if end < 0:
        return f"{html}\n{footer}"
    return f"{html[:end]}{footer}{html[end:]}"


@functools.lru_cache(maxsize=4)
def _message_id_host(public_base_url: str) -> str:
    return urlsplit(public_base_url).hostname or "localhost"


def message_id_header(message_id: uuid.UUID) -> str:
    """The Message-ID of a message: derived from its id, so a redelivered copy carries the same."""
    return f"<{message_id}@{_message_id_host(settings.PUBLIC_BASE_URL)}>"


# --- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)


def _require_postal_address(workspace: Workspace) -> None:
    if not workspace.postal_address.strip():
        raise ApplicationError(
            _(
                "Add the workspace's postal address in the settings first: no marketing mail "
                "goes out without it."
            ),
            field="postal_address",
        )


def render_email(
    *,
    subject: str,
    html: str,
    text: str | None,
    contact: Contact,
    workspace: Workspace,
    message_id: uuid.UUID | None,
    cache_key: tuple[Any, ...] | None,
    link_rewriter: LinkRewriter | None = None,
    pixel_url: str | None = None,
    trap_url: str | None = None,
) -> RenderedEmail:
    """Render one marketing mail for one contact: subject, HTML (CSS inlined), text part
    (generated from the HTML when `text` is empty), our footer in both, and the headers.

    `cache_key` names the template version, e.g. (sequence id, version, step key, variant);
    `link_rewriter` replaces every http(s) link of the HTML except the unsubscribe link;
    `pixel_url` (the open pixel) goes before the footer and `trap_url` (a link no person sees,
    which scanners follow) right after <body>.
    Raises ApplicationError for templates that fail and for a workspace without postal address.
    Pure: reads nothing but the contact's tags (prefetch them), writes nothing.
    """
    _require_postal_address(workspace)
    compiled = _compiled(cache_key, subject, html, text)
    context = template_context(contact=contact, workspace=workspace)
    unsubscribe = context["links"]["unsubscribe_url"]

    rendered_subject = " ".join(
        (
            compiled.subject
            if isinstance(compiled.subject, str)
            else _render(compiled.subject, context, part="subject")
        ).split()
    )
    in_template = link_rewriter is not None and compiled.links_in_template
    tracking = _link_tracking.set(
        _LinkTracking(link_rewriter, unsubscribe) if in_template and link_rewriter else None
    )
    try:
        rendered_html = _render(compiled.html, context, part="HTML")
    finally:
        _link_tracking.reset(tracking)
    if compiled.text is None:
        rendered_text = html_to_text(rendered_html)
    elif compiled.text_generated:
        rendered_text = _tidy_text(_render(compiled.text, context, part="text"), spaces=False)
    else:
        rendered_text = _render(compiled.text, context, part="text").strip()
    if link_rewriter is not None and not compiled.links_in_template:
        rendered_html = _rewrite_links(rendered_html, link_rewriter, keep=unsubscribe)

    html_footer, text_footer = _footers(
        workspace=workspace, unsubscribe=unsubscribe, language=_language(contact, workspace)
    )
    headers = {
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    if message_id is not None:
        headers["Message-ID"] = message_id_header(message_id)
        headers["X-Funnelwerk-Message"] = str(message_id)
    if pixel_url is not None:
        html_footer += (
            f'<img src="{html_lib.escape(pixel_url)}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0">'
        )
    if trap_url is not None:
        rendered_html = _insert_after_body(
            rendered_html,
            f'<a href="{html_lib.escape(trap_url)}" aria-hidden="true" tabindex="-1" '
            'style="display:none;font-size:0;line-height:0;max-height:0;overflow:hidden"></a>',
        )
    return RenderedEmail(
        subject=rendered_subject,
        html=_append_html_footer(rendered_html, html_footer),
        text=f"{rendered_text}\n\n{text_footer}\n" if rendered_text else f"{text_footer}\n",
        headers=headers,
    )


def step_content(step: dict[str, Any], variant: int) -> dict[str, Any]:
    """The subject, html and text of an email step's variant: 0 is the step itself, n is
    variants[n-1] (variants have no text of their own: theirs is generated)."""
    if variant == 0:
        return {"subject": step["subject"], "html": step["html"], "text": step.get("text")}
    variants = step.get("variants") or []
    if not 0 < variant <= len(variants):
        raise ApplicationError(
            _("Variant %(variant)d does not exist in step %(step)s.")
            % {"variant": variant, "step": step.get("key", "")}
        )
    chosen = variants[variant - 1]
    return {"subject": chosen["subject"], "html": chosen["html"], "text": chosen.get("text")}


def _from_address(workspace: Workspace, from_name: str | None) -> str:
    name = " ".join((from_name or "").split())
    if not name and (workspace.sender_email or not workspace.sender_name):
        return sender_of(workspace)
    address = workspace.sender_email or parseaddr(settings.DEFAULT_FROM_EMAIL)[1]
    return str(Address(display_name=name or workspace.sender_name, addr_spec=address))


def message_email(
    *, message: Message, step: dict[str, Any], tracking: MailTracking | None = None
) -> MultipartEmail:
    """The mail of one Message of a sequence step (or broadcast content in the same shape).

    Load the message with select_related("workspace", "contact", "enrollment__sequence") and
    prefetch "contact__tags" to render without queries. Raises ApplicationError when the
    workspace has no postal address or the template fails.
    """
    workspace = message.workspace
    _require_postal_address(workspace)
    content = step_content(step, message.variant)
    cache_key: tuple[Any, ...] | None = None
    if message.enrollment_id is not None and message.enrollment is not None:
        sequence = message.enrollment.sequence
        cache_key = ("sequence", sequence.pk, sequence.version, message.step_key, message.variant)
    elif message.broadcast_id is not None:
        cache_key = ("broadcast", message.broadcast_id, message.variant)
    rendered = render_email(
        subject=content["subject"],
        html=content["html"],
        text=content["text"],
        contact=message.contact,
        workspace=workspace,
        message_id=message.pk,
        cache_key=cache_key,
        link_rewriter=tracking.link_rewriter if tracking else None,
        pixel_url=tracking.pixel_url if tracking else None,
        trap_url=tracking.trap_url if tracking else None,
    )
    email = MultipartEmail(
        subject=rendered.subject,
        body=rendered.text,
        from_email=_from_address(workspace, step.get("from_name")),
        to=[message.contact.email],
        headers=rendered.headers,
    )
    email.attach_alternative(rendered.html, "text/html")
    tag_workspace(email, workspace.pk)
    return email


def render_preview(
    *, step: dict[str, Any], variant: int, contact: Contact | None, workspace: Workspace
) -> RenderedEmail:
    """The builder's live preview of a step's variant for a contact of the workspace, or for
    the sample contact (Ada Lovelace from London) when none is chosen. Sends nothing."""
    if contact is not None and contact.workspace_id != workspace.pk:
        raise ApplicationError(_("That contact is not in this workspace."), field="contact")
    content = step_content(step, variant)
    return render_email(
        subject=content["subject"],
        html=content["html"],
        text=content["text"],
        contact=contact if contact is not None else sample_contact(workspace),
        workspace=workspace,
        message_id=None,
        cache_key=None,
    )


__all__ = [
    "LinkRewriter",
    "RenderedEmail",
    "check_template",
    "html_to_text",
    "message_email",
    "message_id_header",
    "render_email",
    "render_preview",
    "sample_contact",
    "step_content",
    "template_context",
]

"""Building and reading Matrix message contents. Pure: no client, no network."""

from __future__ import annotations

import html
import re
from urllib.parse import unquote

import markdown as _markdown
import nh3

from bot.core.bounds import MAX_ID_LENGTH

USER_ID_RE = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d{1,5})?$")
#: a room id; from room version 12 on it has no server part
ROOM_ID_RE = re.compile(r"^![A-Za-z0-9._=\-/+]+(:[A-Za-z0-9.\-]+(:\d{1,5})?)?$")
ALIAS_RE = re.compile(r"^#[^:\s]+:[A-Za-z0-9.\-]+(:\d{1,5})?$")
#: a formatted body longer than this is not searched for pills (a command is far shorter)
MAX_PILL_SCAN = 64 * 1024
_MATRIX_TO = "https://matrix.to/#/"


def is_user_id(text: str) -> bool:
    """A user id by the Matrix grammar, and no longer than the spec allows."""
    return len(text) <= MAX_ID_LENGTH and bool(USER_ID_RE.match(text))


def is_room_id(text: str) -> bool:
    return len(text) <= MAX_ID_LENGTH and bool(ROOM_ID_RE.match(text))


def is_room_alias(text: str) -> bool:
    return len(text) <= MAX_ID_LENGTH and bool(ALIAS_RE.match(text))


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def matrix_to(id_or_alias: str) -> str:
    return f"https://matrix.to/#/{id_or_alias}"


def pill(user_id: str, name: str | None = None) -> str:
    return f'<a href="{matrix_to(user_id)}">{html.escape(name or user_id)}</a>'


def text_to_html(text: str) -> str:
    """Plain text to HTML: escaped, newlines as <br>."""
    return html.escape(text).replace("\n", "<br>")


#: the HTML a Matrix client may render (the spec's m.room.message "HTML" subset)
MATRIX_TAGS = frozenset({
    "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup",
    "sub", "li", "b", "i", "u", "strong", "em", "s", "strike", "code", "hr", "br", "div", "table",
    "thead", "tbody", "tr", "th", "td", "caption", "pre", "span", "img", "details", "summary"})
MATRIX_ATTRIBUTES = {
    "font": {"data-mx-bg-color", "data-mx-color", "color"},
    "span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler"},
    "a": {"href", "target"},
    "img": {"width", "height", "alt", "title", "src"},
    "ol": {"start"},
}
MATRIX_URL_SCHEMES = frozenset({"https", "http", "ftp", "mailto", "magnet", "mxc"})


def sanitize_html(fragment: str) -> str:
    """Only the Matrix HTML subset survives: no script or style (with their content), no
    event handlers, no javascript: or data: links; images only from mxc:// URIs."""
    return nh3.clean(fragment, tags=set(MATRIX_TAGS), clean_content_tags={"script", "style"},
                     attributes={k: set(v) for k, v in MATRIX_ATTRIBUTES.items()},
                     attribute_filter=_attribute_filter, url_schemes=set(MATRIX_URL_SCHEMES),
                     link_rel=None, strip_comments=True)


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    # an image may only come from the homeserver's media (mxc://), never a remote URL
    if tag == "img" and attribute == "src" and not value.startswith("mxc://"):
        return None
    return value


def markdown_to_html(text: str) -> str:
    """Markdown typed by a person, as HTML a Matrix client may render (sanitised)."""
    return sanitize_html(_markdown.markdown(text, extensions=["extra", "nl2br"], output_format="html"))


def notice(body: str, html_body: str | None = None, reply_to: str | None = None) -> dict:
    """An m.notice content; ``reply_to`` makes it a reply to that event."""
    content: dict = {
        "msgtype": "m.notice",
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": html_body if html_body is not None else text_to_html(body),
    }
    if reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    return content


def edit(original_event_id: str, new_content: dict) -> dict:
    """An m.replace edit of ``original_event_id`` carrying ``new_content``."""
    content = dict(new_content)
    content["body"] = "* " + new_content.get("body", "")
    content["m.new_content"] = new_content
    content["m.relates_to"] = {"rel_type": "m.replace", "event_id": original_event_id}
    return content


def reaction(event_id: str, key: str) -> dict:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}


def strip_reply_fallback(body: str) -> str:
    """Drop the quoted '> ' lines a client puts at the top of a reply's body."""
    lines = body.split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    if i and i < len(lines) and lines[i] == "":
        i += 1
    return "\n".join(lines[i:]) if i else body


def pills_in(formatted_body: str | None) -> list[tuple[str, str]]:
    """(user id, the pill's visible text) for each user pill in an HTML body, in order.

    A scan with ``str.find`` that only moves forward: linear in the body's length, whatever
    it holds (unclosed anchors, nested quotes). Bodies over MAX_PILL_SCAN are not searched."""
    if not formatted_body or not isinstance(formatted_body, str) or len(formatted_body) > MAX_PILL_SCAN:
        return []
    lower = formatted_body.lower()
    found = []
    pos = 0
    while True:
        start = lower.find("<a", pos)
        if start < 0:
            break
        if start + 2 < len(lower) and not lower[start + 2].isspace():
            pos = start + 2  # <abbr>, <address>…
            continue
        tag_end = lower.find(">", start)
        if tag_end < 0:
            break  # no tag closes after here: no pill can follow
        close = lower.find("</a>", tag_end)
        if close < 0:
            break  # nothing closes after here: no pill can follow
        href = _href(formatted_body, lower, start, tag_end)
        pos = close + 4
        if href is None or not href.startswith(_MATRIX_TO):
            continue
        target = unquote(href[len(_MATRIX_TO):].split("?", 1)[0])
        if target.startswith("@"):
            label = _strip_tags(formatted_body[tag_end + 1:close])
            found.append((target, html.unescape(label).strip()))
    return found


def _href(text: str, lower: str, start: int, end: int) -> str | None:
    """The value of the first ``href="…"`` in ``text[start:end]`` (one forward scan)."""
    at = lower.find("href", start, end)
    if at < 0:
        return None
    i = at + 4
    while i < end and text[i].isspace():
        i += 1
    if i >= end or text[i] != "=":
        return None
    i += 1
    while i < end and text[i].isspace():
        i += 1
    if i >= end or text[i] not in "\"'":
        return None
    quote_end = text.find(text[i], i + 1, end)
    return None if quote_end < 0 else text[i + 1:quote_end]


def _strip_tags(fragment: str) -> str:
    """Text outside ``<…>`` in a fragment (linear; an unclosed ``<`` drops the rest)."""
    out = []
    pos = 0
    while True:
        lt = fragment.find("<", pos)
        if lt < 0:
            out.append(fragment[pos:])
            break
        out.append(fragment[pos:lt])
        gt = fragment.find(">", lt)
        if gt < 0:
            break
        pos = gt + 1
    return "".join(out)


def command_text(content: dict) -> str:
    """The text of a message as a command: the reply fallback removed, pills left as text."""
    body = content.get("body") or ""
    if not isinstance(body, str):
        return ""
    if (content.get("m.relates_to") or {}).get("m.in_reply_to"):
        body = strip_reply_fallback(body)
    return body.strip()

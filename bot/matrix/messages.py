"""Building and reading Matrix message contents. Pure: no client, no network."""

from __future__ import annotations

import html
import re
from urllib.parse import unquote

import markdown as _markdown

USER_ID_RE = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d{1,5})?$")
ROOM_ID_RE = re.compile(r"^![A-Za-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d{1,5})?$")
ALIAS_RE = re.compile(r"^#[^:\s]+:[A-Za-z0-9.\-]+(:\d{1,5})?$")
_PILL_RE = re.compile(r"""<a\s+href=["']https://matrix\.to/#/([^"'?]+)[^"']*["'][^>]*>(.*?)</a>""",
                      re.IGNORECASE | re.DOTALL)


def is_user_id(text: str) -> bool:
    return bool(USER_ID_RE.match(text))


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def matrix_to(id_or_alias: str) -> str:
    return f"https://matrix.to/#/{id_or_alias}"


def pill(user_id: str, name: str | None = None) -> str:
    return f'<a href="{matrix_to(user_id)}">{html.escape(name or user_id)}</a>'


def text_to_html(text: str) -> str:
    """Plain text to HTML: escaped, newlines as <br>."""
    return html.escape(text).replace("\n", "<br>")


def markdown_to_html(text: str) -> str:
    return _markdown.markdown(text, extensions=["extra", "nl2br"], output_format="html")


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
    """(user id, the pill's visible text) for each user pill in an HTML body, in order."""
    if not formatted_body:
        return []
    found = []
    for target, label in _PILL_RE.findall(formatted_body):
        target = unquote(target)
        if target.startswith("@"):
            found.append((target, html.unescape(re.sub(r"<[^>]+>", "", label)).strip()))
    return found


def command_text(content: dict) -> str:
    """The text of a message as a command: the reply fallback removed, pills left as text."""
    body = content.get("body") or ""
    if not isinstance(body, str):
        return ""
    if (content.get("m.relates_to") or {}).get("m.in_reply_to"):
        body = strip_reply_fallback(body)
    return body.strip()

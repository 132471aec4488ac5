"""Links in IMs: the schemes that run code or read local files, and the domains
the operator trusts or distrusts.

A link in an IM is how phishing reaches a desk phone's or a softphone's user,
and some clients open ``javascript:``, ``data:`` or ``file:`` links directly.
On requests from outside, every link in IM text (text/plain, text/html, and
text inside message/cpim) is checked:

- a scheme on ``deny_schemes``: refused;
- a host on ``deny_domains`` (the domain or any subdomain): refused;
- with ``allow_domains`` set, a web link to any other host: refused.

Refusal is 403, or an alert when ``action: alert``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import field_validator

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Alert, Outcome, Reject
from sipshield.sip.body_parts import readable_texts
from sipshield.sip.sdp_body import BodyProblem

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

# A scheme and what follows it up to white space or markup; "www." links too.
_LINK = re.compile(
    r"(?<![\w.+-])(?:(?P<scheme>[a-z][a-z0-9+.-]{1,20}):(?P<rest>[^\s<>\"']*)|(?P<www>www\.[^\s<>\"']+))",
    re.IGNORECASE,
)
_WEB_SCHEMES = ("http", "https", "ftp", "ftps")
_HOST = re.compile(r"^//(?:[^@/?#]*@)?(\[[^\]]*\]|[^:/?#]*)")
# What a URL of these schemes looks like, so that prose using the word with a
# colon is not taken for one: "data:" needs a media type, "file:" a path.
_LINK_SHAPES = {
    "data": re.compile(r"[\w.+-]+/[\w.+-]+[;,]|[;,]", re.IGNORECASE),
    "file": re.compile(r"/|[a-z]:[\\/]", re.IGNORECASE),
}
# Dots a browser reads as ".", and backslashes it reads as "/".
_AS_BROWSERS_READ = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": ".", "\\": "/"})


class ImLinksConfig(ModuleConfig):
    name: Literal["im_links"] = "im_links"
    action: Literal["alert", "refuse"] = "refuse"
    deny_schemes: tuple[str, ...] = ("javascript", "vbscript", "data", "file")
    deny_domains: tuple[str, ...] = ()
    # Empty: any domain not denied.
    allow_domains: tuple[str, ...] = ()

    @field_validator("deny_schemes", "deny_domains", "allow_domains")
    @classmethod
    def _lower_case(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.strip().lower().rstrip(".") for name in names)


class ImLinks(SecurityModule):
    name = "im_links"
    Config = ImLinksConfig

    def __init__(self, config: ImLinksConfig) -> None:
        super().__init__(config)
        self.settings = config

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.from_pbx or not msg.body:
            return CONTINUE
        parts = msg.body_parts
        if isinstance(parts, BodyProblem):
            return CONTINUE
        for text in readable_texts(parts):
            for link in _LINK.finditer(_normalised(text.text)):
                problem = self.problem(link)
                if problem:
                    reason = f"{msg.method} with a link {problem}"
                    return Alert(reason) if self.settings.action == "alert" else Reject(reason)
        return CONTINUE

    def problem(self, link: re.Match[str]) -> str:
        """Why this link is refused ("" when it is not)."""
        settings = self.settings
        if link.group("www"):
            scheme, host = "http", _host_of("//" + link.group("www"))
        else:
            scheme, rest = link.group("scheme").lower(), link.group("rest")
            if not rest:
                return ""  # "Note:" followed by a space is a word, not a link
            if scheme in settings.deny_schemes:
                shape = _LINK_SHAPES.get(scheme)
                if shape is not None and not shape.match(rest):
                    return ""  # "data:new numbers" is prose, not a data: URL
                return f"of scheme {scheme}: (im_links.deny_schemes)"
            if scheme not in _WEB_SCHEMES:
                return ""
            # Browsers read "http:host", "http:/host" and "http:\\host" as "http://host".
            host = _host_of("//" + rest.lstrip("/"))
        if _within(host, settings.deny_domains):
            return f"to {host} (im_links.deny_domains)"
        if settings.allow_domains and not _within(host, settings.allow_domains):
            return f"to {host}, not in im_links.allow_domains"
        return ""


def _normalised(text: str) -> str:
    return text.translate(_AS_BROWSERS_READ)


def _host_of(rest: str) -> str:
    match = _HOST.match(rest)
    return match.group(1).lower().rstrip(".") if match else ""


def _within(host: str, domains: tuple[str, ...]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)

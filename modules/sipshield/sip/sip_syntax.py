"""RFC 3261 syntax of the parts of a SIP request, as pure functions.

Each ``check_*`` function takes one part already cut out of a message (a URI,
a Via value, a From value) and returns when it is well formed, or raises
:class:`SipSyntaxError` naming the first thing wrong.  They scan with ``str``
methods and character sets, never with backtracking regular expressions, so
their cost stays linear in whatever a peer sends.

The rules are the grammar's, read with the tolerance RFC 3261 asks for (any
case for names and schemes, whitespace around separators, unknown parameters);
what they refuse is what no conforming element sends.
"""

from __future__ import annotations

import re
import string

_ALNUM = string.ascii_letters + string.digits
TOKEN_CHARS = frozenset(_ALNUM + "-.!%*_+`'~")
# RFC 3986 unreserved and reserved characters plus the escape sign.  Phones
# put '#' unescaped into dialled strings, so it is tolerated too.
URI_CHARS = frozenset(_ALNUM + "-._~:/?#[]@!$&'()*+,;=%")
SCHEME_CHARS = frozenset(_ALNUM + "+-.")
HOST_CHARS = frozenset(_ALNUM + "-.")
IPV6_CHARS = frozenset(string.hexdigits + ":.")
HEX_CHARS = frozenset(string.hexdigits)
# Call-ID "word" characters (RFC 3261 section 25.1) and the '@' between words.
CALL_ID_CHARS = frozenset(_ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}@")
# Parameter values: token, or a host (IPv6 references included).
PARAM_VALUE_CHARS = TOKEN_CHARS | frozenset(":[]")
SIP_SCHEMES = ("sip", "sips")


def only(chars: frozenset[str]) -> re.Pattern[str]:
    """A pattern whose fullmatch says a non-empty text holds nothing but ``chars``.

    One character class: linear, and several times faster than ``set(text) <= chars``.
    """
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + "]+")


_TOKEN = only(TOKEN_CHARS)
_URI = only(URI_CHARS)
_SCHEME = only(SCHEME_CHARS)
_HOST = only(HOST_CHARS)
_IPV6 = only(IPV6_CHARS)
_PARAM_VALUE = only(PARAM_VALUE_CHARS)
_AFTER_HOST = re.compile("[;?]")

# The forms nearly every message uses, each one pattern (character classes
# and fixed separators only: linear, no backtracking to speak of).  A value
# that matches is well formed; one that does not is read piece by piece by
# the checks below, which decide.  Each pattern accepts only what those
# checks accept (tests/unit/test_sip_syntax_common_forms.py).
_T = r"[A-Za-z0-9.!%*_+`'~-]+"  # token
_PV = r"[A-Za-z0-9.!%*_+`'~:\[\]-]+"  # parameter value: token or host
_HOSTPORT = (
    r"[A-Za-z0-9.-]+"
    r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
)
_USER = r"[A-Za-z0-9_.!~*'()&=+$-]+@"
_SIP_URI = rf"sips?:(?:{_USER})?{_HOSTPORT}"
_URI_PARAMS = r"(?:;[A-Za-z0-9_.!~*'()&=+$:/\[\]-]*)*"
_HEADER_PARAMS = rf"(?:;{_T}(?:={_PV})?)*"
_COMMON_URI = re.compile(_SIP_URI + _URI_PARAMS)
_COMMON_VIA = re.compile(rf"SIP/2\.0/{_T} {_HOSTPORT}{_HEADER_PARAMS}")
_COMMON_NAME_ADDR = re.compile(
    rf"(?:(?:\"[^\"\\]*\" *|[A-Za-z0-9.!%*_+`'~ -]*)<{_SIP_URI}{_URI_PARAMS}>|{_SIP_URI})"
    + _HEADER_PARAMS
)


class SipSyntaxError(ValueError):
    """A part of a message breaks the grammar; the message says how."""


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def is_number(text: str, max_digits: int) -> bool:
    """ASCII digits only (``str.isdigit`` alone also takes '²'), at most ``max_digits``."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on ``separator`` except inside quoted strings (with backslash escapes)."""
    if '"' not in text:
        return text.split(separator)
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    if quoted:
        raise SipSyntaxError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def split_address_list(text: str) -> list[str]:
    """Split a Route/Contact list on commas outside quotes and angle brackets."""
    if "," not in text:
        return [text]
    parts: list[str] = []
    start = 0
    quoted = escaped = bracketed = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "<":
            bracketed = True
        elif char == ">":
            bracketed = False
        elif char == "," and not bracketed:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def uri_scheme(uri: str) -> str:
    """The lower-cased scheme of a URI, or raise when it has none."""
    scheme, colon, _ = uri.partition(":")
    if not colon or not scheme or not scheme[0].isalpha() or not _SCHEME.fullmatch(scheme):
        raise SipSyntaxError("no valid URI scheme")
    return scheme.lower()


def check_hostport(hostport: str) -> None:
    """``host [":" port]`` where host is a name, an IPv4 address or ``[IPv6]``."""
    if hostport.startswith("["):
        end = hostport.find("]")
        host, after = hostport[1:end], hostport[end + 1 :]
        if end < 0 or not _IPV6.fullmatch(host):
            raise SipSyntaxError("malformed IPv6 reference")
        if after and not after.startswith(":"):
            raise SipSyntaxError("junk after IPv6 reference")
        port = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
        if not host:
            raise SipSyntaxError("no host")
        if not _HOST.fullmatch(host):
            raise SipSyntaxError("invalid character in host")
    if port is not None and not (is_number(port, 5) and 0 < int(port) < 65536):
        raise SipSyntaxError("invalid port")


def check_uri(uri: str) -> None:
    """A URI with a scheme, legal characters, well-formed escapes and, for SIP, a host."""
    if not _COMMON_URI.fullmatch(uri):
        read_uri(uri)


def read_uri(uri: str) -> None:
    """:func:`check_uri` piece by piece, for any form."""
    scheme = uri_scheme(uri)
    rest = uri[len(scheme) + 1 :]
    if not rest:
        raise SipSyntaxError("empty URI after the scheme")
    if not _URI.fullmatch(rest):
        raise SipSyntaxError("invalid character in URI")
    escape = rest.find("%")
    while escape >= 0:
        digits = rest[escape + 1 : escape + 3]
        if len(digits) != 2 or not set(digits) <= HEX_CHARS:
            raise SipSyntaxError("bad %-escape in URI")
        escape = rest.find("%", escape + 3)
    if scheme not in SIP_SCHEMES:
        return
    user, at, hostpart = rest.partition("@")
    if not at:
        hostpart = rest
    elif not user:
        raise SipSyntaxError("empty user part")
    # Parameters and headers follow the host; neither may hold an unescaped '@'.
    after_host = _AFTER_HOST.search(hostpart)
    check_hostport(hostpart[: after_host.start()] if after_host else hostpart)


def check_params(text: str) -> dict[str, str]:
    """``*( ";" name [ "=" value ] )``; returns the parameters by lower-cased name."""
    params: dict[str, str] = {}
    if not text.strip():
        return params
    if not text.lstrip().startswith(";"):
        raise SipSyntaxError("junk where parameters should be")
    for param in split_outside_quotes(text.lstrip()[1:], ";"):
        name, equals, value = param.partition("=")
        name, value = name.strip(), value.strip()
        if not is_token(name):
            raise SipSyntaxError("malformed parameter")
        if equals and not (
            (len(value) > 1 and value[0] == value[-1] == '"') or _PARAM_VALUE.fullmatch(value)
        ):
            raise SipSyntaxError(f"malformed value of parameter {name}")
        params[name.lower()] = value
    return params


def check_via(value: str) -> None:
    """One Via header value: comma-separated ``SIP/2.0/transport sent-by;params``."""
    # Parameter values hold no ';' or '=': ";branch=" can only start the branch.
    if not (_COMMON_VIA.fullmatch(value) and ";branch=" in value.lower()):
        read_via(value)


def read_via(value: str) -> None:
    """:func:`check_via` piece by piece, for any form."""
    for via_parm in split_outside_quotes(value, ","):
        head, _, params = via_parm.partition(";")
        pieces = head.split("/", 2)
        if len(pieces) != 3:
            raise SipSyntaxError("sent-protocol is not SIP/2.0/transport")
        protocol, version, rest = pieces
        if protocol.strip().upper() != "SIP" or version.strip() != "2.0":
            raise SipSyntaxError("sent-protocol is not SIP/2.0")
        transport_and_host = rest.split(None, 1)
        if len(transport_and_host) != 2 or not is_token(transport_and_host[0]):
            raise SipSyntaxError("no transport or no sent-by host")
        # SWS is allowed around the colon of sent-by.
        check_hostport("".join(transport_and_host[1].split()))
        if not check_params(";" + params if params else "").get("branch"):
            raise SipSyntaxError("no branch parameter")


def check_name_addr(value: str) -> None:
    """A From/To value: ``[display-name] <URI> *params`` or ``URI *params``."""
    if not _COMMON_NAME_ADDR.fullmatch(value):
        read_name_addr(value)


def read_name_addr(value: str) -> None:
    """:func:`check_name_addr` piece by piece, for any form."""
    text = value.strip()
    if text.startswith('"'):
        # A quoted display name, possibly holding '<', ';' or escaped quotes.
        closing = closing_quote(text)
        text = text[closing + 1 :].lstrip()
        if not text.startswith("<"):
            raise SipSyntaxError("no <URI> after the display name")
    opening = text.find("<")
    if opening >= 0:
        if '"' in text[:opening] or ">" in text[:opening]:
            raise SipSyntaxError("malformed display name")
        closing = text.find(">", opening)
        if closing < 0:
            raise SipSyntaxError("'<' without '>'")
        uri, params = text[opening + 1 : closing], text[closing + 1 :]
    else:
        if ">" in text:
            raise SipSyntaxError("'>' without '<'")
        # Without angle brackets the first ';' starts the header parameters.
        uri, semicolon, params = text.partition(";")
        params = semicolon + params
    check_uri(uri.strip())
    check_params(params)


def closing_quote(text: str) -> int:
    """Where the quoted string that ``text`` starts with ends (backslash escapes skipped)."""
    index = 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == '"':
            return index
        index += 1
    raise SipSyntaxError("unterminated quoted display name")

"""XML bodies read by a hardened parser before the PBX and the phones parse them.

Presence (PIDF), watcherinfo, dialog-info, resource-lists, is-composing, IMDN,
conference-info: the devices behind the SBC parse all of these, often with
small embedded XML parsers.  Every XML part of a request from outside is
parsed with ``defusedxml`` (expat with DTDs, entities and external references
refused) and held to size, depth and element-count limits, so the attacks that
live in the parser never reach one that is not hardened:

- a DTD (``<!DOCTYPE``), which is where entity definitions live: 403;
- entity declarations, whatever their use (entity expansion, "billion
  laughs", external entities / XXE): 403;
- an XML part that is not well-formed (or not UTF-8/UTF-16 as declared): 400;
- an XInclude element (another parser would fetch what it names): 403;
- more than ``max_depth`` nested elements or ``max_elements`` in all: 413.

No SIP event package uses a DTD, so none of this refuses a legitimate body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import fromstring
from pydantic import Field

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.sip.body_parts import opened
from sipshield.sip.sdp_body import BodyProblem

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest


# Elements of this namespace make an XInclude-aware parser read another document.
_XINCLUDE = "{http://www.w3.org/2001/XInclude}"


class XmlBodiesConfig(ModuleConfig):
    name: Literal["xml_bodies"] = "xml_bodies"
    # A PIDF with several tuples is a few kilobytes; RLMI bodies more.
    max_bytes: int = Field(default=32768, ge=1024, le=65535)
    max_depth: int = Field(default=24, ge=4, le=256)
    max_elements: int = Field(default=2000, ge=16, le=100000)


class XmlBodies(SecurityModule):
    name = "xml_bodies"
    Config = XmlBodiesConfig

    def __init__(self, config: XmlBodiesConfig) -> None:
        super().__init__(config)
        self.settings = config

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.from_pbx or not msg.body:
            return CONTINUE
        parts = msg.body_parts
        if isinstance(parts, BodyProblem):
            return CONTINUE  # content_policy or validation answers a body it cannot split
        # Inside CPIM too (an IMDN always is), and as the far end decodes it.
        for part in opened(parts):
            if part.is_xml:
                problem = self.problem(part.decoded)
                if problem is not None:
                    code, why = problem
                    return Reject(f"{part.media_type} body of {msg.method}: {why}", code=code)
        return CONTINUE

    def problem(self, data: bytes) -> tuple[int, str] | None:
        """(code, reason) for an XML document that must not be relayed; None for a good one."""
        limits = self.settings
        if len(data) > limits.max_bytes:
            return 413, f"{len(data)} bytes of XML (xml_bodies.max_bytes: {limits.max_bytes})"
        try:
            root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except DTDForbidden:
            if b"<!ENTITY" in data:  # entity expansion ("billion laughs") or XXE
                return 403, "XML with a DTD declaring entities"
            return 403, "XML with a DTD"
        except EntitiesForbidden:
            return 403, "XML declaring entities"
        except DefusedXmlException as exc:
            return 403, f"XML refused by the hardened parser ({type(exc).__name__})"
        except (ParseError, ValueError) as exc:
            return 400, f"XML not well-formed ({str(exc)[:80]})"
        except LookupError as exc:  # an encoding declaration Python does not know
            return 400, f"XML in an unknown encoding ({str(exc)[:80]})"
        return _shape_problem(root, limits.max_depth, limits.max_elements)


def _shape_problem(root: Element, max_depth: int, max_elements: int) -> tuple[int, str] | None:
    # Iterative: a deep document must not exhaust the worker's stack.
    elements, stack = 0, [(root, 1)]
    while stack:
        element, depth = stack.pop()
        elements += 1
        if depth > max_depth:
            return 413, f"XML nested over {max_depth} elements deep (xml_bodies.max_depth)"
        if elements > max_elements:
            return 413, f"XML over {max_elements} elements (xml_bodies.max_elements)"
        if str(element.tag).startswith(_XINCLUDE):
            return 403, "XML with an XInclude (a reference another parser would fetch)"
        stack.extend((child, depth + 1) for child in element)
    return None

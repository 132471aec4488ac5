"""The YAML policy, validated by pydantic.

A bad policy is refused as a whole, before Kamailio starts serving, and each
error names the file, the line and the field, e.g.::

    policy.yaml:31: modules[0].limits.invite: Input should be greater than 0
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from sipshield.core.bans import BanSettings
from sipshield.core.internet import InternetSettings
from sipshield.core.module import FailureMode, ModuleConfig
from sipshield.core.policy_types import HostPort, Network, PolicyError, Transport
from sipshield.core.registry import BUILTIN_MODULES
from sipshield.core.site import is_dialled_number
from sipshield.core.state import RedisSettings
from sipshield.core.syslog import SyslogSettings
from sipshield.edge.media_policy import MediaSettings
from sipshield.edge.topology_hiding import TopologyHidingSettings
from sipshield.ops.tls_config import DEFAULT_CIPHERS, weak_ciphers

TlsVersion = Literal["1.2", "1.3"]
# Kamailio's verify_client values: off (no certificate asked), optional (asked;
# one that is given must verify), on (required and verified), optional_no_ca
# (asked, accepted even when it does not verify: sipshield then decides, with an
# event, from $tls_peer_verified).
ClientCertificates = Literal["off", "optional", "on", "optional_no_ca"]


def _check_ciphers(value: str) -> str:
    weak = weak_ciphers(value)
    if weak:
        raise ValueError(
            "weak cipher suites (need AEAD, forward secrecy and >= 128 bits): "
            + ", ".join(weak[:8])
            + (" ..." if len(weak) > 8 else "")
        )
    return value


CipherList = Annotated[str, AfterValidator(_check_ciphers)]


def _check_number_prefix(value: str) -> str:
    if value and not is_dialled_number(value) and value != "+":
        raise ValueError(f"{value!r} is no number prefix: digits, optionally after one '+'")
    return value


NumberPrefix = Annotated[str, AfterValidator(_check_number_prefix)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listeners(_Strict):
    """Where the SBC listens.  Omit a transport to leave it closed."""

    udp: HostPort | None = "127.0.0.1:5060"
    tcp: HostPort | None = "127.0.0.1:5060"
    tls: HostPort | None = "127.0.0.1:5061"


class Pbx(_Strict):
    """The inside PBX or registrar that every request from outside goes to."""

    address: HostPort
    transport: Literal["udp", "tcp"] = "udp"
    # The PBX is the trusted inside: its requests skip the security modules and
    # it is never banned.  True runs the modules on its requests too.
    inspect: bool = False


class TrunkMtls(_Strict):
    """Mutual TLS: the certificate a trunk must present when it connects to us."""

    # CA certificate(s) (PEM) that must have issued the trunk's certificate
    # directly; None means tls.ca_list.  Each must also be in tls.ca_list, the
    # trust store Kamailio verifies the chain with.
    ca: Path | None = None
    # The certificate must carry one of these names as a DNS subjectAltName
    # (or as its CN when it has no DNS subjectAltName).  "*.example.net"
    # accepts any single label in place of the star.
    expected_names: list[str] = Field(min_length=1)


class Trunk(_Strict):
    """A SIP trunk of another provider."""

    name: str
    # Where calls for this trunk's domains are sent.
    target: HostPort
    transport: Transport = "udp"
    # Request-URI hosts routed out through this trunk.
    domains: list[str] = Field(default_factory=list)
    # Dialled numbers routed out through this trunk: calls from the PBX whose
    # Request-URI user is a number (digits, optionally after one "+") that
    # starts with one of these prefixes; "" takes every number.  The longest
    # prefix over all trunks wins (docs/outbound-calls.md).
    numbers: list[NumberPrefix] = Field(default_factory=list)
    # Source networks this trunk may send from.
    sources: list[Network] = Field(default_factory=list)
    # Requests from this trunk's sources over UDP or TCP are rejected.
    require_tls: bool = False
    # Requests from this trunk must come over TLS with a client certificate
    # that chains to mtls.ca and names the trunk (implies require_tls).
    mtls: TrunkMtls | None = None
    # Outbound TLS: the name the trunk's server certificate must carry (also
    # sent as SNI).  None means the host part of ``target``.
    server_name: str | None = None

    @property
    def needs_tls(self) -> bool:
        return self.require_tls or self.mtls is not None

    @property
    def expected_server_name(self) -> str:
        return self.server_name or self.target.rpartition(":")[0]


class Peers(_Strict):
    pbx: Pbx
    trunks: list[Trunk] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_trunk_names(self) -> Peers:
        names = [trunk.name for trunk in self.trunks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"trunk names must be unique, repeated: {', '.join(duplicates)}")
        return self


class TlsProfile(_Strict):
    """A server profile for one TLS listener address or one SNI name."""

    # IP:PORT of the TLS listener this profile serves; None with server_name
    # means any listener.
    listen: HostPort | None = None
    # The SNI name this profile answers for.
    server_name: str | None = None
    certificate: Path
    private_key: Path
    # CA bundle for client certificates; None means tls.ca_list.
    ca_list: Path | None = None
    # None means tls.client_certificates.
    client_certificates: ClientCertificates | None = None
    # None means tls.min_version.
    min_version: TlsVersion | None = None

    @model_validator(mode="after")
    def _names_a_listener_or_a_name(self) -> TlsProfile:
        if self.listen is None and self.server_name is None:
            raise ValueError("a TLS profile needs listen (IP:PORT), server_name, or both")
        return self


class TlsSettings(_Strict):
    """Kamailio's tls.cfg, generated from here (see sipshield.ops.tls_config)."""

    # Lowest TLS version accepted, in and out.  1.0 and 1.1 are never allowed.
    min_version: TlsVersion = "1.2"
    # OpenSSL cipher list for TLS 1.2; every suite it expands to must be AEAD
    # with forward secrecy (TLS 1.3 suites are all strong and always on).
    ciphers: CipherList = DEFAULT_CIPHERS
    # The SBC's certificate chain and key (PEM) for the default listener
    # profile, also presented when it connects out.  The lab makes its own.
    certificate: Path | None = None
    private_key: Path | None = None
    # CA bundle trusted for client certificates and for trunks' servers.
    ca_list: Path | None = None
    # Whether the default profile asks clients for a certificate.
    client_certificates: ClientCertificates = "off"
    verify_depth: int = Field(default=3, ge=1, le=10)
    # Further server profiles, per listener address or SNI name.
    profiles: list[TlsProfile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> TlsSettings:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        if self.client_certificates != "off" and self.ca_list is None:
            raise ValueError(
                f"client_certificates {self.client_certificates!r} needs ca_list "
                "(the CAs client certificates are verified against)"
            )
        return self


class EventSettings(_Strict):
    # JSON-lines file of security events; None sends them to the Kamailio log only.
    file: Path | None = Path("/var/log/sipshield/events.jsonl")
    # Redis stream name (under the key prefix).
    stream: str = "events"
    stream_maxlen: int = Field(default=100_000, gt=0)
    # Events kept in memory while Redis is down, flushed when it is back.
    buffer_while_down: int = Field(default=10_000, ge=0)
    # Each event also as an RFC 5424 message to a syslog collector (docs/events.md).
    syslog: SyslogSettings | None = None


class PluginConfig(ModuleConfig):
    """A security module outside this package, named by import path."""

    name: Literal["plugin"] = "plugin"
    # "package.module:ClassName"; the class subclasses SecurityModule.
    target: Annotated[str, Field(pattern=r"^[\w.]+:\w+$")]
    options: dict[str, Any] = Field(default_factory=dict)


ModuleEntry = Annotated[
    Union[tuple(m.Config for m in BUILTIN_MODULES.values()) + (PluginConfig,)],  # noqa: UP007
    Field(discriminator="name"),
]


class Policy(_Strict):
    version: Literal[1] = 1
    # Name of this node in events; defaults to the host name.
    node: str = Field(default_factory=socket.gethostname)
    # The SIP domain served by the PBX.
    domain: str
    listeners: Listeners = Field(default_factory=Listeners)
    # A cluster's shared address ("host:port": a VIP or a name), written in
    # every Record-Route instead of this node's own listener, so that any node
    # takes a dialog's next request.  Each node must answer for it: kamailio.cfg
    # aliases it (define CLUSTER_ADDRESS); Kamailio refuses to start otherwise.
    record_route_address: HostPort | None = None
    tls: TlsSettings = Field(default_factory=TlsSettings)
    peers: Peers
    redis: RedisSettings = Field(default_factory=RedisSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    bans: BanSettings = Field(default_factory=BanSettings)
    # Media anchoring in rtpengine and the media policy per peer class; None
    # leaves SDP untouched (see sipshield.edge.media_policy).
    media: MediaSettings | None = None
    # What leaves towards the outside names nothing of the inside
    # (docs/topology-hiding.md).
    topology_hiding: TopologyHidingSettings = Field(default_factory=TopologyHidingSettings)
    # Calls to and from other SIP domains (sipshield.core.internet); off by default.
    internet: InternetSettings = Field(default_factory=InternetSettings)
    # What a crash inside a module does to the request, unless the module says.
    on_module_error: FailureMode = "open"
    # The security modules, in the order they look at a request.
    modules: list[ModuleEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _mtls_needs_client_certificates(self) -> Policy:
        for trunk in self.peers.trunks:
            if trunk.mtls is None:
                continue
            if self.tls.client_certificates == "off":
                raise ValueError(
                    f"trunk {trunk.name} requires mtls but tls.client_certificates is off, "
                    "so no client certificate would be asked for"
                )
            if trunk.mtls.ca is None and self.tls.ca_list is None:
                raise ValueError(f"trunk {trunk.name}: mtls needs mtls.ca or tls.ca_list")
        return self

    @model_validator(mode="after")
    def _media_trunks_exist(self) -> Policy:
        known = {trunk.name for trunk in self.peers.trunks}
        unknown = sorted(set(self.media.trunks) - known) if self.media else []
        if unknown:
            raise ValueError(f"media.trunks names no trunk in peers.trunks: {', '.join(unknown)}")
        return self


def _line_map(node: yaml.Node, path: tuple[Any, ...], lines: dict, dups: list) -> None:
    """Record the line of every mapping key and sequence item; note duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                dups.append((key_node.start_mark.line + 1, path + (key,)))
            seen.add(key)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _line_map(item, path + (index,), lines, dups)


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _locate(loc: tuple[Any, ...], lines: dict) -> tuple[int, tuple[Any, ...]]:
    """Map a pydantic error location to the YAML path and line it points at.

    pydantic adds steps that are not in the file (the discriminator tag of a
    module entry, for instance); those are skipped.
    """
    path: tuple[Any, ...] = ()
    line = 1
    for part in loc:
        if path + (part,) in lines:
            path += (part,)
            line = lines[path]
        elif part == loc[-1] and isinstance(part, str):
            # A missing field: name it, at the line of the mapping it belongs in.
            # Other steps not in the file (discriminator tags) are skipped.
            path += (part,)
    return line, path


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy text; raise :class:`PolicyError` with file:line messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise PolicyError(source, [f"{source}:{line}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise PolicyError(source, [f"{source}:1: the policy must be a YAML mapping"])
    lines: dict[tuple[Any, ...], int] = {}
    duplicates: list[tuple[int, tuple[Any, ...]]] = []
    _line_map(root, (), lines, duplicates)
    if duplicates:
        raise PolicyError(
            source,
            [f"{source}:{line}: {_dotted(path)}: key given twice" for line, path in duplicates],
        )
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        messages = []
        for error in exc.errors(include_url=False):
            line, path = _locate(tuple(error["loc"]), lines)
            messages.append(f"{source}:{line}: {_dotted(path)}: {error['msg']}")
        raise PolicyError(source, messages) from None


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(path, [f"{path}: cannot read the policy: {exc.strerror}"]) from None
    return parse_policy(text, str(path))


def never_banned(policy: Policy) -> list[str]:
    """Networks no ban may cover: the PBX and every ip_controls allow list."""
    pbx_host = policy.peers.pbx.address.rpartition(":")[0]
    allowed = [pbx_host]
    for entry in policy.modules:
        allowed += getattr(entry, "allow", []) if entry.name == "ip_controls" else []
    return allowed

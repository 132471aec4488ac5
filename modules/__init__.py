"""sipshield: a SIP security controller run inside Kamailio through KEMI.

The package is organised one idea per file:

- ``verdict``      what a security module may answer, and the chain's decision;
- ``message``      the lazy, read-only view of a SIP request the modules inspect;
- ``site``         who is who at this edge: the PBX and the trunks;
- ``hop``          what is known of a request just before it is relayed;
- ``module``       the contract every security module implements;
- ``registry``     the built-in modules, by policy name;
- ``policy``       the YAML policy and its pydantic validation;
- ``pipeline``     the ordered, frozen chain of modules, modes and error handling,
                   for both phases (request, relay);
- ``state``        the Redis-backed shared state, with its outage behaviour;
- ``events``       security events to a JSON-lines log and a Redis stream;
- ``remediation``  the one place where a decision is applied to Kamailio;
- ``kemi``         the thin KEMI handler class Kamailio calls;
- ``edge_routing`` the reference edge proxy routing (PBX inside, trunks outside).
"""

__version__ = "0.1.0"

"""sipshield: a SIP security controller run inside Kamailio through KEMI.

The package is grouped by role, one idea per file:

- ``core``    verdicts and decisions, the module contract, the pipeline (request
              and relay phases), the policy and its registry, remediation (the
              one place that replies, drops and rewrites), events, Redis state,
              bans, the site (who is who) and the relay phase's facts;
- ``checks``  the security modules, one class per file;
- ``sip``     the request view, SIP syntax, SDP, certificates, dialog tokens;
- ``edge``    the KEMI handler, the reference routing, media anchoring, the drop-in;
- ``ops``     the ``sipshield`` command, nft-sync, tls.cfg rendering;
- ``lab``     the loopback lab and the harness its tests share;
- ``rtpengine`` (top-level ``rtpengine/``) the ng protocol client.

Lower layers import nothing of upper ones at run time, and the import graph has
no cycle (tests/unit/test_architecture.py).
"""

__version__ = "0.1.0"

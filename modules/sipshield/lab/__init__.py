"""The loopback lab (``sipshield lab up``/``down``) and the harness it and the
tests share: SIPp, a SIP probe, network namespaces, TLS material, free ports.
"""

"""SIP and SDP as sipshield reads them: the request view (parsed or backed by
Kamailio), syntax rules, SDP and where it sits in a body, certificates, dialog
tokens, reply facts.
"""

"""Content security: what SIP messaging, presence and device-control requests carry.

One module per idea, each with its own mode in the policy (docs/policy.md):
content_policy (methods and bodies per peer class), xml_bodies (hardened XML
parsing), device_control (remote reboot, resync, talk), text_safety (what
people read: bidi tricks, invisible characters, payloads for logs and web UIs),
im_links (links in IMs), spit (IM floods and spam, counted in Redis) and
presence_privacy (who may watch whom).
"""

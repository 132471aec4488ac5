"""Kamailio's side: the KEMI handler, the reference routing, media anchoring in
rtpengine and its policy, the drop-in for operators' own routing.
"""

"""``sipshield selftest``: attack your own deployment and check that it stops what it should.

One attack (or a small family) per file; ``catalogue`` lists them in the order
they run, ``runner`` runs them and compares each outcome with the verdict the
operator's policy implies, and ``guard`` is the one way any attack reaches the
network.
"""

"""Toll-fraud defence: per-account limits on calls leaving for trunks and the internet."""

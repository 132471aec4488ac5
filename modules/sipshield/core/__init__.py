"""The framework: verdicts and decisions, the module contract, the pipeline (both
phases), the policy and its registry of modules, remediation (the one place that
replies, drops and rewrites), events, the Redis state and the bans, the site and
the relay phase's facts.
"""

"""The fuzz run of `make fuzz`: mutated SIP messages through the lab (see fuzz.run)."""

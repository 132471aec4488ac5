"""Harness only the tests and the benchmark use: network namespaces, stock Kamailio."""

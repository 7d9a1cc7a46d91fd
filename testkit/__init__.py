"""What hashveil's tests and benchmarks share: tiny generated data sets, a config that trains on
them in seconds, a complete tiny service, live servers on free loopback ports, hostile input.

Not part of the product: no package of hashveil imports it (an import-linter contract).
"""

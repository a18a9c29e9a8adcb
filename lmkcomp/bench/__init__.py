"""Benchmarks (`lmkcomp bench ...`): print a table, write JSON. Never part of the tests."""

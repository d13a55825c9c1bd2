"""The storage conformance suite: one set of rules, run against every backend.

    pytest contract_tests --storage-url URL [--storage-url URL ...]

Without ``--storage-url`` it covers ``memory://``, a fresh SQLite file and every installed
network backend whose server it can find (see ``conftest.py``).
"""

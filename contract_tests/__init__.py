"""The storage conformance suite: one set of rules, run against every backend.

Installed as ``stovepipe.conformance.storage``::

    stovepipe conformance storage URL [PYTEST ARGUMENTS...]
    pytest --pyargs stovepipe.conformance.storage --storage-url URL [--storage-url URL ...]

In the repository, ``pytest contract_tests`` without ``--storage-url`` covers ``memory://``, a
fresh SQLite file and every installed network backend whose server it can find (see
:mod:`stovepipe.conformance.plugin`).
"""

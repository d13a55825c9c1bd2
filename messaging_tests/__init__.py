"""The messaging conformance suite: every messaging queue implementation, one set of rules.

Installed as ``stovepipe.conformance.messaging``::

    stovepipe conformance messaging URL [PYTEST ARGUMENTS...]
"""

"""The messaging conformance suite: every messaging queue implementation, one set of rules."""

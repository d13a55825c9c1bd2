"""Stovepipe: tells a company at which commit a branch is green."""

__version__ = "0.1.0"

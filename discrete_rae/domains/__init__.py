"""Domains: where data comes from, how it is encoded, and how samples are judged."""

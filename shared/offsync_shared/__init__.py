"""Contracts and adapters used by more than one Offsync service."""

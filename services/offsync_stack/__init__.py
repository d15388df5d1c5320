"""Runs the whole Offsync stack on one machine: embedded infrastructure plus one OS process per service."""

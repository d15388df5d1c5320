"""Pure sync rules: which records each user carries offline, as shared bucket definitions.

Nothing here imports a database, broker or web framework; the service's outer layer performs
what these modules decide.
"""

"""SQL migrations of the sync schema, applied in file-name order."""

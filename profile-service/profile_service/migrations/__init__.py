"""SQL migrations of the admin schema, applied in file-name order."""

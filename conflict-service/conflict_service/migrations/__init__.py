"""SQL migrations of the data schema, applied in file-name order."""

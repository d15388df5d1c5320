"""publish-service: Materializes per-user record sets as shared buckets and keeps them current."""

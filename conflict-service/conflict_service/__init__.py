"""conflict-service: Owns records: applies offline change batches under the conflict policy; records REST API."""

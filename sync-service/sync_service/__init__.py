"""sync-service: Device websocket gateway: streams bucket ops to devices, forwards their change batches."""

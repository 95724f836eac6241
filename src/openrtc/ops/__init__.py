"""What operators see and steer: HTTP endpoints, metrics, loop lag."""

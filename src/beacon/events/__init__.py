"""Events: the stored history, event types with their schemas, and queries over them."""

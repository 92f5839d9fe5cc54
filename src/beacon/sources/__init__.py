"""Sources: where events come from, and the keys that let them in."""

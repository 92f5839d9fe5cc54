"""What runs in the background: bus consumers, periodic jobs and timer handlers, which each
domain declares in its own package (`registry.Registry`) and the runtime starts."""

"""Imports every model module so `Base.metadata` knows every table."""


def import_all_models() -> None:
    """Register every table with the shared metadata."""
    import beacon.bus.models
    import beacon.deliveries.models
    import beacon.deliveries.webhooks.models
    import beacon.events.models
    import beacon.identity.models
    import beacon.ingest.models
    import beacon.journeys.models
    import beacon.segments.models
    import beacon.sources.models
    import beacon.timers.models
    import beacon.workers.models  # noqa: F401

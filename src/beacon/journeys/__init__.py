"""Journeys: automations as documents, validated, and the pure engine that runs them.

Nothing here does I/O or reads a clock (`now` is passed in); runs are plain JSON-able state.
The integration (bus consumer, timers, storage, API) loads, calls and applies:

- `definition.parse_journey(document, event_schemas=..., attributes=...)`: the grammar (in its
  docstring) read into a `Journey`, or `validation.InvalidJourney` naming every problem at its
  JSON path; `definition.fingerprint` (an unchanged document makes no new version);
  `schema.journey_schema()` is the published JSON Schema (also `journey.schema.json`);
- `entry.start(journey, version=, profile=, trigger=, existing_runs=, now=)`: a new `Run` or
  `NotStarted(reason)`; `triggers` says when timed triggers fire and builds their events;
- `engine.advance(journey, run, stimulus, profile=, now=, sent=, default_caps=)`:
  `Advance(run, effects)`; stimuli in `stimuli`, effects in `effects`, runs in `runs`;
- `examples/`: journeys for the common scenarios, in YAML.
"""

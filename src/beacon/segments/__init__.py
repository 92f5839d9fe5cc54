"""Segments: who a rule over traits, consents, identities and behaviour selects, computed purely.

Everything here is pure (no I/O, no clock: `now` is always passed in) over plain JSON values, so
the integration (bus consumer, timers, storage, API) only loads, calls and stores:

- `attributes`: computed attribute definitions (`parse_attribute`), and `attribute_state`: their
  incremental state (`apply`, `value`, `next_change`, `rebuild`), JSON to store as it is;
- `rules`: the rule grammar, `parse_rule` (every problem with its JSON path) and
  `required_attributes`; `evaluator`: `evaluate` and `next_change` (when to look again);
- `validation.InvalidDefinition`: what a refused rule or definition raises.
"""

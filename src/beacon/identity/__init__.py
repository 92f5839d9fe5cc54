"""Identity: profiles (one per person) and the sessions that link visits to them."""

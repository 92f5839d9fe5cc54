"""Infrastructure shared by every domain: ids, time, JSON, database, logging, errors."""

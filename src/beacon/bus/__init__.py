"""The bus: messages that leave the database through the outbox and reach subscribers."""

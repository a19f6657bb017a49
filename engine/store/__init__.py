"""The durable message store: schema, migrations, engines and the group-commit MessageStore."""

"""DNS wire format: names, record types, messages. Parsing checks every length before it reads."""

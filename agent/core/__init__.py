"""Sans-I/O core of the update agent: events in, effects out. No clock, no sockets, no disk."""

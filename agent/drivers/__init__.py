"""The only code in agent/ that does I/O."""

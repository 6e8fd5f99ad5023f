"""One module per `otasim` subcommand group; each exposes register(subparsers)."""

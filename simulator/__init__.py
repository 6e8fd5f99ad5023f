"""The fleet simulator, the reference server, release tools and the otasim command."""

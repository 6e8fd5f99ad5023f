"""Server dialects: pure request builders and response parsers."""

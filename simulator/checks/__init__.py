"""`otasim check`: validate a Capgo-compatible server's behaviour before an app-store release.

One module per family of checks (`protocol`, `bundles`, `decisions`, `transport`), each check a
small function registered with an id, a title, a severity and one line on why it matters for
devices (`model.check`). `context.CheckContext` speaks to the server with the agent's own
dialect, HTTP port and verifier; `runner` selects and runs checks; `output` renders the
terminal table, JSON, JUnit XML and HTML. docs/checks.md lists every check.
"""

"""The reference OTA server: Capgo-compatible device endpoints, bundle files with Range,
channels, staged rollouts, rollback, an admin API with role-based API keys, stats.

Start one with `simulator.server.embedded.run_server()` or `otasim serve`; drive it with
`simulator.server.client.AdminClient`.
"""

"""otasim's device-side update agent: what one Capacitor live-update device runs."""

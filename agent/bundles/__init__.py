"""Safe unzip, delta manifests, brotli."""

"""Locust load tests: real device agents as Locust users. Only this package imports locust."""

"""Locust load tests for CloudMart: user journeys, load shapes and per-request records."""

"""gameday: chaos and acceptance tests for live CloudMart-shaped deployments."""

"""The embedded CloudMart lab: a real deployment that ships with the harness."""

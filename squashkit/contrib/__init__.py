"""Integrations of squashkit with the tools its users run."""

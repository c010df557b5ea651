"""Shared foundation: settings, errors, taxonomy, plugin registry, domain records."""

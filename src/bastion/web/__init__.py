"""Web pages for every capability, served by the same app."""

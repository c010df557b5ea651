"""Privacy: encrypted conversations, crypto-shredding, retention and purge, a tamper-evident audit log."""

"""The three MSG-LDM training stages; each assembles networks and losses written elsewhere and states its metric."""

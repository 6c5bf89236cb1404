"""Names and choices shared by inference and its command lines. No heavy imports here, so `--help` stays instant."""
CHECKPOINT_CHOICES = ("final", "best", "latest")
NOISE_STRATEGIES = ("shared", "independent")     # one noise draw for every slice of a volume, or one per slice

"""CPL (Hejna et al. 2023) against P-IQL, SFT and %BC on offline preferences, and iterated self-improvement: `python -m experiments.cpl`."""

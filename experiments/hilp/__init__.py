"""HILP (Park, Kreiman & Levine 2024) on unlabelled point-maze data, against a random φ and no representation: `python -m experiments.hilp`."""

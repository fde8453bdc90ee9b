"""Atari 100k aggregates: mean and median human-normalised score, IQM and optimality gap with
stratified-bootstrap intervals (rliable), and SPR's Table 1 per-game scores for comparison.

HNS = (score - random) / (human - random) per game (`jaxrl_si.envs.atari`). The paper's mean
and median: average each game's HNS over seeds, then the mean / median over games. IQM (Agarwal
et al., 2021): the 25 % trimmed mean of all run x game HNS; optimality gap: 1 - mean(min(HNS, 1)).
Intervals: rliable's stratified bootstrap over runs within each game, percentile method.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxrl_si.envs.atari import atari_100k_game, human_normalized_score

_METRICS = ("mean", "median", "iqm", "optimality_gap")

# SPR (Schwarzer et al., 2021, arXiv 2007.05929) Table 1: final scores after 100k agent steps.
# DER: `atari_der_scores` in SPR's official code (github.com/mila-iqia/spr, src/rlpyt_utils.py).
# SimPLe, CURL, DrQ, SPR: Table 1 of the TCSR paper ("Temporal Change Sensitive Representation
# for Reinforcement Learning"), which reprints these four columns of SPR's Table 1. Checked:
# SPR's stated anchors (Pong -5.9, Kangaroo 3276.4, UpNDown 28138.5, ...) match, and the HNS
# aggregates recomputed from the columns give the table's rows: mean / median SimPLe 0.443 / 0.144,
# DER 0.285 / 0.161, CURL 0.381 / 0.175, DrQ 0.357 / 0.268, SPR 0.703 / 0.415 (the paper prints
# 0.704, from unrounded per-game means); games above human 2, 2, 2, 2, 7.
# OTRainbow and SPR-without-augmentation are left out: no source for them was found here.
TABLE1_METHODS = ("SimPLe", "DER", "CURL", "DrQ", "SPR")
_TABLE1 = {
    "Alien": (616.9, 739.9, 558.2, 771.2, 801.5),
    "Amidar": (88.0, 188.6, 142.1, 102.8, 176.3),
    "Assault": (527.2, 431.2, 600.6, 452.4, 571.0),
    "Asterix": (1128.3, 470.8, 734.5, 603.5, 977.8),
    "BankHeist": (34.2, 51.0, 131.6, 168.9, 380.9),
    "BattleZone": (5184.4, 10124.6, 14870.0, 12954.0, 16651.0),
    "Boxing": (9.1, 0.2, 1.2, 6.0, 35.8),
    "Breakout": (16.4, 1.9, 4.9, 16.1, 17.1),
    "ChopperCommand": (1246.9, 861.8, 1058.5, 780.3, 974.8),
    "CrazyClimber": (62583.6, 16185.3, 12146.5, 20516.5, 42923.6),
    "DemonAttack": (208.1, 508.0, 817.6, 1113.4, 545.2),
    "Freeway": (20.3, 27.9, 26.7, 9.8, 24.4),
    "Frostbite": (254.7, 866.8, 1181.3, 331.1, 1821.5),
    "Gopher": (771.0, 349.5, 669.3, 636.3, 715.2),
    "Hero": (2656.6, 6857.0, 6279.3, 3736.3, 7019.2),
    "Jamesbond": (125.3, 301.6, 471.0, 236.0, 365.4),
    "Kangaroo": (323.1, 779.3, 872.5, 940.6, 3276.4),
    "Krull": (4539.9, 2851.5, 4229.6, 4018.1, 3688.9),
    "KungFuMaster": (17257.2, 14346.1, 14307.8, 9111.0, 13192.7),
    "MsPacman": (1480.0, 1204.1, 1465.5, 960.5, 1313.2),
    "Pong": (12.8, -19.3, -16.5, -8.5, -5.9),
    "PrivateEye": (58.3, 97.8, 218.4, -13.6, 124.0),
    "Qbert": (1288.8, 1152.9, 1042.4, 854.4, 669.1),
    "RoadRunner": (5640.6, 9600.0, 5661.0, 8895.1, 14220.5),
    "Seaquest": (683.3, 354.1, 384.5, 301.2, 583.1),
    "UpNDown": (3350.3, 2877.4, 2955.2, 3180.8, 28138.5),
}


def paper_table() -> dict[str, dict[str, float]]:
    """SPR's Table 1 scores: `{method: {game: score}}` for `TABLE1_METHODS` and the 26 games."""
    return {method: {game: row[j] for game, row in _TABLE1.items()} for j, method in enumerate(TABLE1_METHODS)}


def normalized_score_matrix(scores: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """`(games, hns [runs, games])` from raw scores `{game: [runs]}` (same run count for each game)."""
    if not scores:
        raise ValueError("aggregate_scores needs the scores of at least one game")
    games = [atari_100k_game(g) for g in scores]
    if len(set(games)) != len(games):
        raise ValueError(f"a game is given twice (paper name and ROM id?): {list(scores)}")
    columns = [np.asarray(v, np.float64).reshape(-1) for v in scores.values()]
    runs = {len(c) for c in columns}
    if len(runs) != 1 or 0 in runs:
        counts = {g: len(c) for g, c in zip(games, columns, strict=True)}
        raise ValueError(f"every game needs the same, non-zero number of runs (seeds); got {counts}")
    hns = np.stack([human_normalized_score(g, c) for g, c in zip(games, columns, strict=True)], axis=1)
    return games, hns


def aggregate_scores(
    scores: Mapping[str, np.ndarray],
    *,
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Mean, median, IQM and optimality gap of HNS with stratified-bootstrap intervals.

    Args:
      scores: `{game: raw scores [runs]}` (each run's evaluation score, e.g. the mean of 100
        episodes), games among the 26 (paper names or ROM ids), the same run count for each.
      reps: bootstrap resamples (rliable's default is 50,000; 2,000 keeps it to seconds).
      seed: seeds the bootstrap, so the intervals are reproducible.
      confidence: the intervals' coverage.

    Returns a JSON-ready dict: `mean`, `median`, `iqm`, `optimality_gap` (point estimates),
    `<metric>_ci` (`[low, high]`), `per_game_hns` (`{game: mean HNS over runs}`),
    `superhuman_games` (games whose mean HNS exceeds 1), `games`, `num_runs`, `reps`,
    `confidence`, `seed`.
    """
    library, metrics = _import_rliable()
    games, hns = normalized_score_matrix(scores)

    def aggregates(x: np.ndarray) -> np.ndarray:
        return np.array([
            metrics.aggregate_mean(x),
            metrics.aggregate_median(x),
            metrics.aggregate_iqm(x),
            metrics.aggregate_optimality_gap(x, 1.0),
        ])  # fmt: skip

    points, intervals = _seeded_interval_estimates(library, hns, aggregates, reps, seed, confidence)
    per_game = hns.mean(axis=0)
    out = {name: float(points[i]) for i, name in enumerate(_METRICS)}
    out |= {f"{name}_ci": [float(intervals[0, i]), float(intervals[1, i])] for i, name in enumerate(_METRICS)}
    out |= {
        "per_game_hns": {g: float(h) for g, h in zip(games, per_game, strict=True)},
        "superhuman_games": int(np.sum(per_game > 1.0)),
        "games": games,
        "num_runs": int(hns.shape[0]),
        "reps": int(reps),
        "confidence": float(confidence),
        "seed": int(seed),
    }
    return out


def paper_aggregates() -> dict[str, dict[str, float]]:
    """`{method: {"mean": ..., "median": ..., "superhuman_games": ...}}` recomputed from `paper_table`."""
    out = {}
    for method, per_game in paper_table().items():
        hns = np.array([human_normalized_score(g, s) for g, s in per_game.items()])
        out[method] = {
            "mean": float(hns.mean()),
            "median": float(np.median(hns)),
            "superhuman_games": int((hns > 1).sum()),
        }
    return out


def _seeded_interval_estimates(library, hns, func, reps, seed, confidence):
    """rliable's `get_interval_estimates` on one score matrix, with a seeded, contained RNG.

    rliable 1.2's `StratifiedBootstrap` draws its resamples from NumPy's GLOBAL generator
    (`np.random.choice`) whatever `random_state` says, so it is seeded here and its state
    restored afterwards.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        points, intervals = library.get_interval_estimates(
            {"run": hns}, func, reps=int(reps), confidence_interval_size=float(confidence)
        )
    finally:
        np.random.set_state(state)
    return points["run"], intervals["run"]


def _import_rliable():
    """`(rliable.library, rliable.metrics)`, or an ImportError naming the extra to install."""
    hint = "install it with: pip install 'jaxrl_si[analysis]'"
    try:
        from rliable import library, metrics
    except ImportError as err:
        raise ImportError(f"Atari 100k aggregates need the optional package `rliable`; {hint}") from err
    except TypeError as err:  # rliable's dependency `arch` breaks on import under pandas 3
        raise ImportError(f"rliable failed to import ({err}); it needs pandas<3: pip install 'pandas<3'") from err
    return library, metrics


__all__ = [
    "TABLE1_METHODS",
    "aggregate_scores",
    "normalized_score_matrix",
    "paper_aggregates",
    "paper_table",
]

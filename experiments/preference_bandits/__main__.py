"""Run both preference-bandit experiments and write their tables and plots.

    python -m experiments.preference_bandits --out runs/preference_bandits
    python -m experiments.preference_bandits --help      # every field of both configs
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

from experiments import cli
from experiments.preference_bandits.deterministic import (
    DeterministicConfig,
    format_deterministic_table,
    plot_deterministic,
    run_deterministic,
)
from experiments.preference_bandits.intransitive import (
    IntransitiveConfig,
    format_intransitive_table,
    plot_intransitive,
    run_intransitive,
)


@dataclasses.dataclass(frozen=True)
class BanditsConfig:
    """What the preference losses do, on problems with known answers."""

    out: pathlib.Path = pathlib.Path("runs/preference_bandits")  # where tables and PNGs go
    deterministic: DeterministicConfig = DeterministicConfig()  # DPO vs IPO, one response always wins
    intransitive: IntransitiveConfig = IntransitiveConfig()  # self-play on a cyclic preference


def main(config: BanditsConfig) -> None:
    config.out.mkdir(parents=True, exist_ok=True)
    sections = []
    for title, run, table, plot, sub_config in (
        ("Deterministic preferences: DPO vs IPO", run_deterministic, format_deterministic_table,
         lambda r: plot_deterministic(r, config.out / "deterministic.png"), config.deterministic),
        ("Intransitive preferences: iterative DPO, SPPO, INPO, SPO", run_intransitive, format_intransitive_table,
         lambda r: plot_intransitive(r, config.out), config.intransitive),
    ):
        start = time.perf_counter()
        results = run(sub_config)
        seconds = time.perf_counter() - start
        plot(results)
        section = f"## {title}\n\n{table(results)}\n\n(compile + run: {seconds:.1f} s)\n"
        print(section, flush=True)
        sections.append(section)
    (config.out / "tables.md").write_text("\n".join(sections))
    print(f"Tables: {config.out / 'tables.md'}")
    print(f"Plots:  {', '.join(str(p) for p in sorted(config.out.glob('*.png')))}")


if __name__ == "__main__":
    cli.main(BanditsConfig, main)

"""The Cloud TPU generations `tpu.pod` knows: accelerator-type names, zones, runtime versions.

Read from Google's pages (they change; a zone missing here can be allowed with `--unlisted-zone`):
- zones: https://cloud.google.com/tpu/docs/regions-zones. The tables we could read list the North
  American zones and, for v6e, `europe-west4-a`; the other European and Asian zones are left out
  because we could not read them, not because they lack TPUs.
- runtime versions: https://cloud.google.com/tpu/docs/runtimes, the "PyTorch and JAX" table
  (one base image per generation; `pip install` brings JAX).
- sizes: the number after the dash counts chips for v5e (`v5litepod`) and v6e, TensorCores (two
  per chip, eight per host) for v4 and v5p. https://cloud.google.com/tpu/docs/v5e lists the v5e
  slices of 1, 4, 8, 16, ..., 256 chips; v6e is given the same list (also 256-chip 2-D pods; its
  page we did not read).
"""

from __future__ import annotations

import dataclasses
import re

SLICES_2D = (1, 4, 8, 16, 32, 64, 128, 256)  # chips in a v5e or v6e slice
ZONE_PATTERN = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z0-9]+")  # us-west4-a, europe-west4-b, us-central1-ai1a


class UsageError(ValueError):
    """A mistake in what the user asked for: printed as one line `error: ...`, exit status 2."""


@dataclasses.dataclass(frozen=True)
class Generation:
    prefix: str  # accelerator-type prefix gcloud takes, before `-<size>`
    docs_name: str  # what Google's pages call it
    runtime_version: str  # `--runtime-version` for JAX on this generation
    zones: tuple[str, ...]  # zones the docs list for every configuration of it
    sizes: tuple[int, ...] | None  # allowed sizes; None: any multiple of 8 TensorCores (one host each)


GENERATIONS = {
    g.prefix: g
    for g in (
        Generation("v4", "v4", "tpu-ubuntu2204-base", ("us-central2-b",), None),
        Generation("v5litepod", "v5e", "v2-alpha-tpuv5-lite", ("us-central1-a", "us-south1-a", "us-west1-c", "us-west4-a"), SLICES_2D),
        Generation("v5p", "v5p", "v2-alpha-tpuv5", ("us-central1-a", "us-east5-a"), None),
        Generation("v6e", "v6e", "v2-alpha-tpuv6e", ("us-central1-b", "us-east1-d", "us-east5-a", "us-east5-b", "europe-west4-a"), SLICES_2D),
    )
}


def known_types() -> str:
    """The accepted accelerator-type forms, for error messages: `v4-<8k>, v5litepod-<1|4|...>, ...`."""
    forms = []
    for g in GENERATIONS.values():
        sizes = "|".join(map(str, g.sizes)) if g.sizes else "8k"
        forms.append(f"{g.prefix}-<{sizes}> ({g.docs_name})")
    return ", ".join(forms)


def generation(accelerator_type: str) -> Generation:
    """The generation of `accelerator_type` (e.g. `v5litepod-8`); `UsageError` if it is not a known one."""
    prefix, _, size = accelerator_type.rpartition("-")
    known = GENERATIONS.get(prefix)
    if known is None or not size.isdigit():
        hint = " (gcloud spells v5e as v5litepod)" if prefix == "v5e" else ""
        raise UsageError(f"unknown accelerator type {accelerator_type!r}{hint}; known: {known_types()}")
    n = int(size)
    if (known.sizes and n not in known.sizes) or (not known.sizes and (n < 8 or n % 8)):
        raise UsageError(f"unknown accelerator type {accelerator_type!r}; known: {known_types()}")
    return known


def check_zone(zone: str, gen: Generation | None = None, *, unlisted: bool = False) -> None:
    """`UsageError` unless `zone` looks like a zone and, given `gen`, is one the docs list for it."""
    if not ZONE_PATTERN.fullmatch(zone):
        raise UsageError(f"--zone {zone!r} is not a zone name like us-west4-a")
    if gen is not None and not unlisted and zone not in gen.zones:
        raise UsageError(f"{gen.docs_name} TPUs are not listed in zone {zone!r}; listed: {', '.join(gen.zones)} (--unlisted-zone to try anyway)")

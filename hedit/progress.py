"""Progress bars (tqdm on stderr, with ETA); silent when asked or when stderr is not a terminal under CI."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True, **kw) -> tqdm:
    disable = not enabled or (os.environ.get("CI") == "true" and not sys.stderr.isatty())
    scale = unit == "B"
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=scale,
        unit_divisor=1024 if scale else 1000,
        disable=disable,
        dynamic_ncols=True,
        file=sys.stderr,
        **kw,
    )

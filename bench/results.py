"""What every benchmark script shares: writing its results into a README between markers."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_readme(readme: Path, start: str, end: str, section: str) -> None:
    """Replace the text between the ``start`` and ``end`` markers (or append a Results section)."""
    text = readme.read_text() if readme.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = f"{head}{start}\n{section}\n{end}{tail}"
    else:
        text += f"\n## Results\n\n{start}\n{section}\n{end}\n"
    readme.write_text(text)


def command_line() -> str:
    """The command that ran this benchmark, relative to the repository when it can be."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_arg = str(script.relative_to(ROOT))
    except ValueError:
        script_arg = str(script)
    return shlex.join([sys.executable, script_arg, *sys.argv[1:]])


def machine_description() -> str:
    """Cores, CPU model, OS and Python: the line every results table starts from."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores{f' ({model})' if model else ''}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, {python_speed()}")


def python_speed() -> str:
    """How fast this machine runs plain Python right now: the CPU model line does not tell hosts
    apart (all of ours say "AMD EPYC"), yet searching a million memories took 2.5x longer on one
    than on another."""
    best = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000
    return f"sum(range(1000)) in {best * 1e6:.1f} µs"

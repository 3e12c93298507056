"""Where the time of verify, identify, enroll and a cold ``sigvault verify`` goes, in CPU time.

    python benchmarks/overhead.py                # all figures, one run
    python benchmarks/overhead.py --repeat 5     # more verify / identify repetitions

On a machine shared with other work, wall-clock figures swing by 10x from one minute to the next; CPU time
(``time.process_time``: every thread of this process) does not, so each product path is measured in CPU
milliseconds, split into the model's part and the rest:

- ``load``: read, hash, decode and preprocess the image (``Vault._load``);
- ``embed``: the ONNX model (``Vault._embed``; both onnxruntime threads are counted);
- ``scoring``: fitting the person's scorer and threshold (``enroll`` only);
- ``rest``: everything else (SQL, decision log and its hash chain, index, Python glue): the overhead.

Wall medians are printed beside them for reference. A cold ``sigvault verify`` runs in a new process;
its CPU is the child's user + system time. Inputs are the synthetic 1800x800 scans of ``run.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import bench_settings, scan_png  # noqa: E402

from sigvault.vault import Vault  # noqa: E402


class Meter:
    """CPU time spent inside some methods of an object, by label, while installed."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    @contextmanager
    def watch(self, obj: object, **methods: str) -> Iterator[None]:
        """``label=method_name`` pairs: CPU inside ``obj.method_name`` is added to ``label``."""
        originals = {name: getattr(obj, name) for name in methods.values()}
        for label, name in methods.items():
            setattr(obj, name, self._timed(label, originals[name]))
        try:
            yield
        finally:
            for name, fn in originals.items():
                setattr(obj, name, fn)

    def _timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.process_time() - start

        return timed


def measure(call: Callable[[], object], meter: Meter, n: int) -> dict[str, list[float]]:
    """Per call: total CPU, wall, and the meter's labels (ms)."""
    out: dict[str, list[float]] = {"cpu": [], "wall": []}
    for _ in range(n):
        meter.spent.clear()
        w, c = time.perf_counter(), time.process_time()
        call()
        out["cpu"].append(1000 * (time.process_time() - c))
        out["wall"].append(1000 * (time.perf_counter() - w))
        for label, seconds in meter.spent.items():
            out.setdefault(label, []).append(1000 * seconds)
    return out


def line(name: str, figures: dict[str, list[float]], parts: tuple[str, ...], per: int = 1) -> None:
    med = {k: statistics.median(v) / per for k, v in figures.items()}
    rest = med["cpu"] - sum(med.get(p, 0.0) for p in parts)
    shown = ", ".join(f"{p} {med.get(p, 0.0):.2f}" for p in parts)
    unit = "ms" if per == 1 else "ms per image"
    print(
        f"{name}: CPU p50 {med['cpu']:.2f} {unit} = {shown}, rest {rest:.2f}  "
        f"(wall p50 {med['wall']:.1f}, n={len(figures['cpu'])})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--persons", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="passes over the 60 questioned scans (verify)")
    ap.add_argument("--cold", type=int, default=7, help="cold `sigvault verify` runs")
    args = ap.parse_args()
    print(f"sigvault from {ROOT}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    home = Path(tempfile.mkdtemp(prefix="sigvault-overhead-"))
    persons = [f"person-{p:03d}" for p in range(args.persons)]
    enroll_sets = {person: [scan_png(100 + p, i) for i in range(5)] for p, person in enumerate(persons)}
    questioned = [(person, scan_png(100 + p, 10 + k)) for p, person in enumerate(persons) for k in range(3)]
    meter = Meter()
    with Vault.open(bench_settings(home)) as vault:
        vault.enroll("warmup", [scan_png(999, i) for i in range(2)])
        scoring = {"scoring": "_outlier_warnings", "threshold": "_refresh_threshold"}
        # enroll reads its images on threads (process CPU is counted around them, on the calling thread)
        load_all = "_load_all" if hasattr(vault, "_load_all") else "_load"
        with meter.watch(vault, load=load_all, embed="_embed", **scoring):
            sets = iter(enroll_sets.items())
            figures = measure(lambda: vault.enroll(*next(sets)), meter, len(enroll_sets))
        figures["scoring"] = [a + b for a, b in zip(figures.pop("scoring"), figures.pop("threshold"), strict=True)]
        line("enroll (5 scans per call)", figures, ("load", "embed", "scoring"), per=5)
        with meter.watch(vault, load="_load", embed="_embed"):
            vault.verify(*questioned[0])
            items = iter(questioned * args.repeat)
            line(
                "verify warm",
                measure(lambda: vault.verify(*next(items)), meter, len(questioned) * args.repeat),
                ("load", "embed"),
            )
            query = questioned[0][1]
            vault.identify(query, top=5)
            n_refs = 5 * len(persons) + 2
            line(
                f"identify top 5 of {n_refs} refs",
                measure(lambda: vault.identify(query, top=5), meter, 20 * args.repeat),
                ("load", "embed"),
            )
    q = home / "questioned.png"
    q.write_bytes(questioned[0][1])
    env = dict(os.environ, SIGVAULT_HOME=str(home), PYTHONPATH=str(ROOT))
    env.pop("SIGVAULT_DATABASE_URL", None)
    cold: dict[str, list[float]] = {"cpu": [], "wall": []}
    for _ in range(args.cold):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        w = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sigvault", "verify", persons[0], str(q)],
            env=env,
            cwd=ROOT,  # `-m` puts the working directory first on sys.path: this checkout's sigvault
            capture_output=True,
            check=True,
        )
        cold["wall"].append(1000 * (time.perf_counter() - w))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cold["cpu"].append(1000 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
    print(
        f"cold `sigvault verify` (new process): CPU p50 {statistics.median(cold['cpu']):.0f} ms "
        f"(wall p50 {statistics.median(cold['wall']):.0f} ms, n={args.cold})"
    )


if __name__ == "__main__":
    main()

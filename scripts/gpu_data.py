"""Write the compact molecule file that travels with the GPU check.

Draws ``n`` SMILES at random (seeded, without replacement) from the MOSES training split
(``train.csv.gz`` of the ``molsets`` wheel, or any one-SMILES-per-line file with an optional
``SMILES`` header) and writes them gzipped, one per line, no header. The output is
byte-for-byte reproducible: same source, ``n`` and seed give the same file (gzip mtime 0).

    python scripts/gpu_data.py .whl/moses_sample.smi.gz --n 250000 --seed 0
    python scripts/gpu_data.py OUT.smi.gz --source my_train.csv.gz --n 1000

Prints one JSON line: the output path, how many SMILES it holds, its size and the source.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import sys
from pathlib import Path


def read_smiles(source: Path) -> list[str]:
    """SMILES of ``source`` (.gz or plain): the first field of each non-empty line, header dropped."""
    opener = gzip.open if source.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(source, "rt") as fh:  # type: ignore[operator]
        rows = [line.split(",")[0].strip() for line in fh if line.strip()]
    if rows and rows[0].lower() == "smiles":
        rows = rows[1:]
    return rows


def write_sample(source: Path, dest: Path, n: int, seed: int = 0) -> int:
    """Write ``min(n, available)`` SMILES drawn at random from ``source`` to gzipped ``dest``.

    The drawn lines keep their order in the source file, so the file compresses as well as
    the source does. Returns the number written.
    """
    if n <= 0:
        raise ValueError(f"--n must be positive, got {n}")
    rows = read_smiles(source)
    if not rows:
        raise ValueError(f"{source}: no SMILES found")
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    text = "".join(rows[i] + "\n" for i in picked).encode()
    dest.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(text)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(dest)
    return len(picked)


def moses_train_file() -> Path:
    """The MOSES training split installed with the package's data dependency (molsets)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from discrete_rae.data.molecules import moses_path

    return moses_path("train")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", help="output file (.smi.gz)")
    p.add_argument("--source", default=None, help="SMILES file to draw from (default: MOSES train.csv.gz)")
    p.add_argument("--n", type=int, default=250_000, help="number of SMILES (default 250,000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    source = Path(args.source) if args.source else moses_train_file()
    if not source.is_file():
        print(f"error: --source {source}: no such file", file=sys.stderr)
        return 2
    try:
        written = write_sample(source, Path(args.dest), args.n, args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dest = Path(args.dest)
    print(json.dumps({"file": str(dest), "smiles": written, "bytes": dest.stat().st_size, "source": str(source),
                      "seed": args.seed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

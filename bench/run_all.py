"""Run every benchmark in bench/ and print their tables (paste them into docs/BENCHMARKS.md)."""
import runpy
import sys
from pathlib import Path

for path in sorted(Path(__file__).parent.glob("bench_*.py")):
    if len(sys.argv) > 1 and not any(a in path.name for a in sys.argv[1:]):
        continue
    print(f"\n## {path.stem}\n", flush=True)
    runpy.run_path(str(path), run_name="__main__")

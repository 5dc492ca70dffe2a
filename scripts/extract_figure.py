"""Save one image output of an executed notebook as a PNG (how docs/img/ was made).

    python scripts/extract_figure.py EXECUTED.ipynb OUT.png [--nth N] [--contains TEXT]

Picks the N-th PNG output (0-based, default 0) among the code cells whose source contains TEXT.
Execute a lesson first, e.g. ``jupyter nbconvert --to notebook --execute --output-dir /tmp/exec
lessons/04_ddpm.ipynb`` in the preset whose results you want to show.
"""
import argparse
import base64
import json

ap = argparse.ArgumentParser()
ap.add_argument("notebook")
ap.add_argument("out")
ap.add_argument("--nth", type=int, default=0)
ap.add_argument("--contains", default="")
a = ap.parse_args()
cells = [c for c in json.load(open(a.notebook))["cells"]
         if c["cell_type"] == "code" and a.contains in "".join(c["source"])]
pngs = [o["data"]["image/png"] for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
if len(pngs) <= a.nth:
    raise SystemExit(f"only {len(pngs)} PNG outputs in cells containing {a.contains!r}; run the notebook first")
with open(a.out, "wb") as fh:
    fh.write(base64.b64decode(pngs[a.nth]))
print(f"wrote {a.out}")

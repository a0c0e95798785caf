"""Write the inputs of the framework runs: Alpaca demo rows and the filled-in YAML templates.

    .venv/bin/python tests/integration_configs/prepare.py OUT_DIR [--rows 272]

The templates train 10 steps of 16 rows of at most 256 tokens; Axolotl drops longer rows (about a third
of them), LLaMA-Factory truncates them: 272 rows leave Axolotl more than 160.
OUT_DIR gets alpaca_demo.json (Alpaca format: instruction / input / output, the first ROWS rows of
qtuning's built-in alpaca-demo, i.e. LLaMA-Factory's data/alpaca_en_demo.json), dataset_info.json
(LLaMA-Factory's dataset registry for that file), and every YAML template beside this file with
${MODEL} (the Hugging Face folder that `qtuning fetch` converts), ${DATA_FILE}, ${DATASET_DIR} and
${OUTPUT_DIR} (OUT_DIR/<template name>-out) filled in. Prints the paths as JSON. Needs qtuning's own environment (it reads the cache).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parent
ROWS = 272


def prepare(out_dir: Path, rows: int = ROWS) -> dict:
    from qtuning.data.assets import fetch_file
    from qtuning.data.models import resolve_model

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    records = json.loads(fetch_file("alpaca_en_demo.json", quiet=True).read_text(encoding="utf-8"))[:rows]
    data_file = out_dir / "alpaca_demo.json"
    data_file.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    (out_dir / "dataset_info.json").write_text(
        json.dumps({"alpaca_demo": {"file_name": data_file.name}}, indent=1), encoding="utf-8"
    )
    values = {
        "MODEL": resolve_model("smollm2-135m-instruct"),
        "DATA_FILE": str(data_file),
        "DATASET_DIR": str(out_dir),
    }
    paths = {"data_file": str(data_file), "model": values["MODEL"]}
    for source in sorted(HERE.glob("*.yaml")):
        template = Template(source.read_text(encoding="utf-8"))
        target = out_dir / source.name
        target.write_text(template.substitute(values, OUTPUT_DIR=str(out_dir / f"{source.stem}-out")), encoding="utf-8")
        paths[source.stem] = str(target)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args()
    print(json.dumps(prepare(args.out_dir, args.rows), indent=1))

"""Regenerate ``schemas/*.json`` from the models: ``python -m streams.contracts``."""

import json
from pathlib import Path

from streams.contracts import json_schemas

SCHEMA_DIR = Path(__file__).parent / "schemas"

for role, schema in json_schemas().items():
    path = SCHEMA_DIR / f"{role}.schema.json"
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    print(path)

"""The group of each training row (its source, task or family), for per-group kept shares.

    groups = row_groups(train_dataset, "source")     # at trainer set-up: one str per row id
    write_groups(output_dir, "source", groups)       # output_dir/qtuning_groups.json
    field, groups = read_groups(run_dir)             # `qtuning report`: (None, None) when absent

The plan log names samples by row id (row_ids.py); this file maps those ids to groups, so that the
run's report can say which groups the selection kept and which it starved. Written once at the
start of training, by rank 0 (every rank holds the same rows).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, ReportError
from .row_ids import ID_KEY
from .run_files import GROUPS_FILE

NO_GROUP = "(none)"  # a row whose group value is missing (None)


def row_groups(dataset, field_name: str) -> list[str]:
    """The value of column `field_name` of every row of `dataset`, as text, by row id: groups[i] is the
    group of the row whose id (the column ID_KEY, which the trainer adds as the row's position) is i. A
    ClassLabel column gives its label names; a missing value (None) is NO_GROUP.

    Raises:
        ConfigError: `dataset` is not a `datasets.Dataset` (no columns, no row ids), it has no such
            column, or a value is a list or an object (not a group name).
    """
    columns = getattr(dataset, "column_names", None)
    if not isinstance(columns, list) or not hasattr(dataset, "__len__"):
        raise ConfigError(
            f"group_field={field_name!r} needs a training set that is a datasets.Dataset (its rows get ids); "
            f"got {type(dataset).__name__}"
        )
    if field_name not in columns:
        raise ConfigError(
            f"group_field={field_name!r}: the training set has no column {field_name!r}; its columns are "
            f"{sorted(columns)} (a framework that tokenises the data first may have dropped it)"
        )
    feature = (getattr(dataset, "features", None) or {}).get(field_name)
    names = getattr(feature, "names", None)  # a ClassLabel: integers that stand for these names
    values = []
    for index, value in enumerate(dataset[field_name]):
        if isinstance(value, (list, dict)):
            raise ConfigError(
                f"group_field={field_name!r}: row {index} holds {type(value).__name__} {str(value)[:60]!r}; "
                "expected a group name (text or a number)"
            )
        if names is not None and isinstance(value, int) and 0 <= value < len(names):
            value = names[value]
        values.append(NO_GROUP if value is None else str(value))
    ids = list(dataset[ID_KEY]) if ID_KEY in columns else list(range(len(values)))
    if any(not isinstance(i, int) or i < 0 for i in ids):
        raise ConfigError(
            f"group_field={field_name!r}: the training set's {ID_KEY!r} column holds ids that are not row indices"
        )
    groups = [NO_GROUP] * (max(ids) + 1 if ids else 0)
    for row_id, value in zip(ids, values):  # ids are the rows' positions unless the data carried its own
        groups[row_id] = value
    return groups


def write_groups(output_dir: str | Path, field_name: str, groups: list[str]) -> Path:
    """output_dir/GROUPS_FILE: {"field": field_name, "groups": [group of row 0, of row 1, ...]}."""
    from ..files import atomic_write_text

    path = Path(output_dir) / GROUPS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"field": field_name, "groups": groups}) + "\n")
    return path


def read_groups(run_dir: str | Path) -> tuple[str | None, list[str] | None]:
    """(field, groups) from run_dir/GROUPS_FILE, or (None, None) when the run logged no groups.

    Raises:
        ReportError: the file is not valid JSON or not a {"field": str, "groups": [str, ...]} object.
    """
    path = Path(run_dir) / GROUPS_FILE
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read as JSON ({exc}); expected the run's row groups") from exc
    field_name = data.get("field") if isinstance(data, dict) else None
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(field_name, str) or not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ReportError(f"{path}: expected {{'field': name, 'groups': [one name per row id]}}")
    return field_name, groups

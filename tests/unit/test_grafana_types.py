"""Every dashboard checked against Grafana's own published types, offline.

Each `deploy/grafana/dashboards/*.json` becomes a TypeScript file that declares it a `Dashboard`
from `@grafana/schema` (pinned, with `typescript`, in `deploy/grafana/check/package-lock.json`;
`make grafana-types` runs `npm ci` there). `tsc --noEmit --strict` then rejects a key the type
does not have (an object literal gets TypeScript's excess-property check, at every depth) and a
value of the wrong type.

The check proves it can go red: beside the real dashboards, the same `tsc` run compiles copies
with a planted error each (a misspelt key inside a panel, `"gridPos": "x"`, a panel width that is
a string, a misspelt key at the top), and the test asserts `tsc` reports each of them, and nothing
else. Not covered, because Grafana types them as `Record<string, unknown>`: a panel's `options`
and its `targets` (they belong to each panel and data source plugin).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import harness

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
CHECK = ROOT / "deploy" / "grafana" / "check"
TSC = CHECK / "node_modules" / "typescript" / "bin" / "tsc"
SCHEMA = CHECK / "node_modules" / "@grafana" / "schema" / "package.json"
#: `Dashboard` from the package root is the veneer over the generated v1 (schemaVersion) model:
#: the classic JSON that file provisioning loads.
HEADER = "import type { Dashboard } from '@grafana/schema';\n\nconst dashboard: Dashboard = "
FOOTER = ";\n\nexport default dashboard;\n"
#: tsc's "file(line,col): error TSnnnn: message" lines (--pretty false).
DIAGNOSTIC = re.compile(r"^(?P<file>[^(\s]+)\(\d+,\d+\): error (?P<code>TS\d+): ", re.MULTILINE)


def first_panel(dashboard: dict[str, Any]) -> dict[str, Any]:
    """The first panel that is not a row: where a typo in a panel is planted."""
    panel = next(p for p in dashboard["panels"] if p["type"] != "row")
    assert isinstance(panel, dict)
    return panel


def misspelt_panel_key(dashboard: dict[str, Any]) -> None:
    panel = first_panel(dashboard)
    panel["descripton"] = panel.pop("description", "planted")


def gridpos_not_an_object(dashboard: dict[str, Any]) -> None:
    first_panel(dashboard)["gridPos"] = "x"


def width_a_string(dashboard: dict[str, Any]) -> None:
    first_panel(dashboard)["gridPos"]["w"] = "8"


def misspelt_top_key(dashboard: dict[str, Any]) -> None:
    dashboard["panells"] = dashboard.pop("panels")


#: name -> (how to plant it, the tsc error code it must draw)
PLANTED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "misspelt_panel_key": (misspelt_panel_key, "TS2353"),  # "may only specify known properties"
    "gridpos_not_an_object": (gridpos_not_an_object, "TS2322"),  # "not assignable to type"
    "width_a_string": (width_a_string, "TS2322"),
    "misspelt_top_key": (misspelt_top_key, "TS2353"),
}


def tsc() -> Path:
    if TSC.is_file() and SCHEMA.is_file() and shutil.which("node"):
        return TSC
    message = (
        "Grafana's types are not installed: `make grafana-types` (npm ci in deploy/grafana/check)"
    )
    if harness.IN_CI:
        pytest.fail(message + " (CI=true: this check must not skip)")
    pytest.skip(message)


def as_typescript(dashboard: Any) -> str:
    return HEADER + json.dumps(dashboard, indent=2, ensure_ascii=False) + FOOTER


def test_every_dashboard_is_a_grafana_dashboard_and_planted_errors_are_caught(
    tmp_path: Path,
) -> None:
    compiler = tsc()
    # Module resolution looks for node_modules beside and above the sources.
    (tmp_path / "node_modules").symlink_to(CHECK / "node_modules", target_is_directory=True)
    real = sorted(DASHBOARDS.glob("*.json"))
    assert real, DASHBOARDS
    sources = []
    for path in real:
        source = tmp_path / f"{path.stem}.ts"
        source.write_text(as_typescript(json.loads(path.read_text())))
        sources.append(source)
    base = json.loads(real[0].read_text())
    for name, (plant, _) in PLANTED.items():
        planted = copy.deepcopy(base)
        plant(planted)
        source = tmp_path / f"planted_{name}.ts"
        source.write_text(as_typescript(planted))
        sources.append(source)

    checked = subprocess.run(
        [
            "node",
            str(compiler),
            "--noEmit",
            "--strict",
            "--pretty",
            "false",
            "--target",
            "es2022",
            "--module",
            "esnext",
            "--moduleResolution",
            "bundler",
            "--skipLibCheck",  # Grafana's own .d.ts files; ours are checked in full
            *[str(s) for s in sources],
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    output = checked.stdout + checked.stderr
    found = {(Path(m["file"]).stem, m["code"]) for m in DIAGNOSTIC.finditer(output)}

    for path in real:
        errors = [
            line for line in output.splitlines() if Path(line.split("(")[0]).stem == path.stem
        ]
        assert not errors, f"{path.name} is not a Grafana Dashboard:\n" + "\n".join(errors)
    for name, (_, code) in PLANTED.items():
        assert (f"planted_{name}", code) in found, f"tsc missed the planted {name}:\n{output}"
    assert {stem for stem, _ in found} == {f"planted_{n}" for n in PLANTED}, output
    assert checked.returncode != 0, output  # the planted files fail the run

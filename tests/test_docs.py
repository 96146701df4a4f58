"""The docs stay true: the CLI reference is regenerated from the CLI and must match."""

from __future__ import annotations

import runpy

from conftest import ROOT


def test_cli_reference_is_current():
    gen = runpy.run_path(str(ROOT / "docs" / "gen_cli_reference.py"))
    assert (ROOT / "docs" / "cli.md").read_text() == gen["reference"](), (
        "docs/cli.md is out of date: run python docs/gen_cli_reference.py"
    )

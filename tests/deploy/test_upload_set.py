"""The files `gcloud functions deploy` uploads, as the real gcloud lists them.

`gcloud meta list-files-for-upload` applies `.gcloudignore` exactly as a
deploy does and needs no network.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]

# What the function needs at run time, and all of it.
RUNTIME_FILES = {
    "main.py",
    "requirements.txt",
    "dm/__init__.py",
    "dm/__main__.py",
    "dm/cli.py",
    "dm/edge.py",
    "dm/logs.py",
    "dm/prpc.py",
    "dm/rpc.py",
    "dm/service.py",
    "dm/store.py",
    "dm/proto/__init__.py",
    "dm/proto/activate_execution_pb2.py",
    "dm/proto/graph_data_pb2.py",
}


def upload_set(directory: pathlib.Path, tmp_path: pathlib.Path) -> set[str]:
    result = subprocess.run(
        ["gcloud", "meta", "list-files-for-upload", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={
            **os.environ,
            "CLOUDSDK_CONFIG": str(tmp_path / "gcloud-config"),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            # Offline: no update check, no usage report.
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
        },
    )
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


def dm_modules() -> set[str]:
    """Every Python module of the dm package, so a module added later is
    either uploaded or noticed here."""
    return {
        str(path.relative_to(ROOT))
        for path in ROOT.glob("dm/**/*.py")
        if "__pycache__" not in path.parts
    }


def test_runtime_files_name_every_dm_module():
    assert dm_modules() == {f for f in RUNTIME_FILES if f.startswith("dm/")}


def test_upload_set_of_the_work_tree(tmp_path):
    # The work tree holds .venv, caches, tests, tools and scripts.
    assert upload_set(ROOT, tmp_path) == RUNTIME_FILES


def test_upload_set_leaves_out_strays(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", ".*_cache"),
    )
    strays = [
        "dm/__pycache__/edge.cpython-312.pyc",
        "dm/test_edge.py",
        "dm/proto/tests/test_x.py",
        "dm/.env",
        ".env",
        "service-account-key.json",
        "bench/results.json",
        "notes.txt",
        "new_module_at_top.py",
    ]
    for stray in strays:
        path = tree / stray
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("stray\n")
    assert upload_set(tree, tmp_path) == RUNTIME_FILES

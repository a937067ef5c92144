"""deploy.sh, run against a stand-in `gcloud` that records its arguments.

Nothing here reaches Google Cloud: `tests/deploy/bin/gcloud` is first on
PATH, appends each call's argv to a file and answers from the environment.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy.sh"
FAKE_BIN = pathlib.Path(__file__).resolve().parent / "bin"
URL = "https://dm-activate-execution-abc123-uc.a.run.app"
SA = "dm-activate@my-proj.iam.gserviceaccount.com"


def run_deploy(
    tmp_path: pathlib.Path, *args: str, fail: str = "", **env: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Runs deploy.sh with the stand-in gcloud; returns the result and the
    recorded gcloud calls."""
    log = tmp_path / "gcloud-calls.jsonl"
    log.unlink(missing_ok=True)
    environ = {
        "PATH": f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_GCLOUD_LOG": str(log),
        "FAKE_GCLOUD_URL": URL,
        "FAKE_GCLOUD_FAIL": fail,
    }
    environ.update(env)
    result = subprocess.run(
        ["bash", str(DEPLOY), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    calls = []
    if log.exists():
        calls = [json.loads(line) for line in log.read_text().splitlines()]
    return result, calls


def find(calls: list[list[str]], *prefix: str) -> list[list[str]]:
    return [call for call in calls if call[: len(prefix)] == list(prefix)]


def flags(call: list[str]) -> dict[str, str]:
    """`--name=value` arguments as a dict (bare `--name` maps to "")."""
    out = {}
    for arg in call:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            out[name] = value
    return out


def test_deploy_defaults(tmp_path):
    result, calls = run_deploy(tmp_path, DM_PROJECT="my-proj")
    assert result.returncode == 0, result.stderr
    [deploy] = find(calls, "functions", "deploy")
    assert deploy[2] == "dm-activate-execution"
    assert flags(deploy) == {
        "--gen2": "",
        "--quiet": "",
        "--project": "my-proj",
        "--region": "us-central1",
        "--runtime": "python312",
        "--source": str(ROOT),
        "--entry-point": "activate_execution",
        "--trigger-http": "",
        "--no-allow-unauthenticated": "",
        "--service-account": SA,
        "--memory": "512Mi",
        "--cpu": "1",
        "--timeout": "60s",
        "--min-instances": "0",
        "--max-instances": "100",
        "--concurrency": "16",
        "--set-env-vars": "GOOGLE_CLOUD_PROJECT=my-proj,"
        "DM_FIRESTORE_DATABASE=(default),DM_EXECUTIONS_COLLECTION=dm_executions",
    }
    # Without --setup-iam, --create-database or --ttl nothing else changes.
    assert [call[:2] for call in calls] == [
        ["functions", "deploy"],
        ["functions", "describe"],
    ]
    assert f"function URL: {URL}\n" in result.stdout
    assert f"pRPC URL:     {URL}/prpc/dm.Deps/ActivateExecution\n" in result.stdout
    # The IAM commands are printed for the operator to run once.
    assert "roles/datastore.user" in result.stderr
    assert "gcloud iam service-accounts create dm-activate" in result.stderr


def test_deploy_every_setting_from_the_environment(tmp_path):
    result, calls = run_deploy(
        tmp_path,
        DM_PROJECT="other-proj",
        DM_REGION="europe-west1",
        DM_FUNCTION="dm-staging",
        DM_DATABASE="dm-db",
        DM_COLLECTION="execs",
        DM_SERVICE_ACCOUNT="runner@other-proj.iam.gserviceaccount.com",
        DM_MEMORY="1Gi",
        DM_CPU="2",
        DM_TIMEOUT="30s",
        DM_MIN_INSTANCES="1",
        DM_MAX_INSTANCES="7",
        DM_CONCURRENCY="40",
    )
    assert result.returncode == 0, result.stderr
    [deploy] = find(calls, "functions", "deploy", "dm-staging")
    got = flags(deploy)
    assert {k: v for k, v in got.items() if k != "--source"} == {
        "--gen2": "",
        "--quiet": "",
        "--project": "other-proj",
        "--region": "europe-west1",
        "--runtime": "python312",
        "--entry-point": "activate_execution",
        "--trigger-http": "",
        "--no-allow-unauthenticated": "",
        "--service-account": "runner@other-proj.iam.gserviceaccount.com",
        "--memory": "1Gi",
        "--cpu": "2",
        "--timeout": "30s",
        "--min-instances": "1",
        "--max-instances": "7",
        "--concurrency": "40",
        "--set-env-vars": "GOOGLE_CLOUD_PROJECT=other-proj,"
        "DM_FIRESTORE_DATABASE=dm-db,DM_EXECUTIONS_COLLECTION=execs",
    }
    [describe] = find(calls, "functions", "describe", "dm-staging")
    assert flags(describe)["--region"] == "europe-west1"


def test_missing_project_fails_before_any_gcloud_call(tmp_path):
    result, calls = run_deploy(tmp_path)
    assert result.returncode == 2
    assert calls == []
    assert result.stderr.strip().splitlines() == [
        "deploy.sh: DM_PROJECT is not set: name the Google Cloud project to deploy "
        "to, e.g. DM_PROJECT=my-project ./deploy.sh"
    ]


@pytest.mark.parametrize(
    "var, value",
    [
        ("DM_COLLECTION", "a,DM_EXECUTIONS_COLLECTION=b"),
        ("DM_DATABASE", "Bad_DB"),
        ("DM_CONCURRENCY", "many"),
        ("DM_PROJECT", "x; rm -rf /"),
    ],
)
def test_unusable_settings_fail_before_any_gcloud_call(tmp_path, var, value):
    env = {"DM_PROJECT": "my-proj", var: value}
    result, calls = run_deploy(tmp_path, **env)
    assert result.returncode == 2
    assert calls == []
    assert f"{var} has an unusable value" in result.stderr


def test_dry_run_runs_nothing_and_prints_pasteable_commands(tmp_path):
    args = ("--dry-run", "--setup-iam", "--create-database", "--ttl")
    result, calls = run_deploy(tmp_path, *args, DM_PROJECT="my-proj")
    assert result.returncode == 0, result.stderr
    assert calls == []

    # Every printed command, pasted into a shell with the stand-in gcloud,
    # reaches gcloud with exactly the arguments a real run passes.
    printed = [
        line for line in result.stdout.splitlines() if line.startswith("gcloud ")
    ]
    script = tmp_path / "pasted.sh"
    script.write_text("set -e\n" + "\n".join(printed) + "\n")
    pasted, pasted_calls = run_deploy_script(tmp_path, script)
    assert pasted.returncode == 0, pasted.stderr
    assert pasted_calls == [shlex.split(line)[1:] for line in printed]

    # The same commands a real run makes when nothing exists yet.
    fail = "iam service-accounts describe;firestore databases describe"
    real, real_calls = run_deploy(tmp_path, *args[1:], fail=fail, DM_PROJECT="my-proj")
    assert real.returncode == 0, real.stderr
    assert real_calls == pasted_calls


def run_deploy_script(tmp_path, script):
    log = tmp_path / "pasted-calls.jsonl"
    result = subprocess.run(
        ["bash", str(script)],
        env={
            "PATH": f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}",
            "FAKE_GCLOUD_LOG": str(log),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return result, calls


def test_setup_iam_grants_only_firestore_user(tmp_path):
    result, calls = run_deploy(
        tmp_path,
        "--setup-iam",
        fail="iam service-accounts describe",
        DM_PROJECT="my-proj",
    )
    assert result.returncode == 0, result.stderr
    [create] = find(calls, "iam", "service-accounts", "create")
    assert create[3] == "dm-activate" and flags(create)["--project"] == "my-proj"
    grants = find(calls, "projects", "add-iam-policy-binding")
    assert grants == [
        [
            "projects",
            "add-iam-policy-binding",
            "my-proj",
            f"--member=serviceAccount:{SA}",
            "--role=roles/datastore.user",
            "--condition=None",
        ]
    ]
    # No other role is granted anywhere.
    assert all("--role=roles/datastore.user" in c for c in calls if "--role" in str(c))


def test_setup_iam_keeps_an_existing_service_account(tmp_path):
    result, calls = run_deploy(tmp_path, "--setup-iam", DM_PROJECT="my-proj")
    assert result.returncode == 0, result.stderr
    assert find(calls, "iam", "service-accounts", "describe")
    assert not find(calls, "iam", "service-accounts", "create")
    assert find(calls, "projects", "add-iam-policy-binding")


def test_create_database_only_when_missing(tmp_path):
    env = {"DM_PROJECT": "my-proj", "DM_DATABASE": "dm-db"}
    _, present = run_deploy(tmp_path, "--create-database", **env)
    assert not find(present, "firestore", "databases", "create")
    result, missing = run_deploy(
        tmp_path, "--create-database", fail="firestore databases describe", **env
    )
    assert result.returncode == 0, result.stderr
    [create] = find(missing, "firestore", "databases", "create")
    assert flags(create) == {
        "--project": "my-proj",
        "--database": "dm-db",
        "--location": "us-central1",
        "--type": "firestore-native",
    }


def test_ttl_sets_the_policy_and_tells_the_function(tmp_path):
    result, calls = run_deploy(
        tmp_path, "--ttl", DM_PROJECT="my-proj", DM_FINISHED_TTL_DAYS="7"
    )
    assert result.returncode == 0, result.stderr
    [ttl] = find(calls, "firestore", "fields", "ttls", "update")
    assert ttl[4] == "expire_at"
    assert flags(ttl) == {
        "--project": "my-proj",
        "--database": "(default)",
        "--collection-group": "dm_executions",
        "--enable-ttl": "",
        "--async": "",
    }
    [deploy] = find(calls, "functions", "deploy")
    assert flags(deploy)["--set-env-vars"].endswith(",DM_FINISHED_TTL_DAYS=7")


def test_opting_out_of_iam_is_explicit(tmp_path):
    result, calls = run_deploy(
        tmp_path, "--allow-unauthenticated", DM_PROJECT="my-proj"
    )
    assert result.returncode == 0
    [deploy] = find(calls, "functions", "deploy")
    assert "--allow-unauthenticated" in deploy
    assert "--no-allow-unauthenticated" not in deploy
    assert "anyone may call the function" in result.stderr


def test_no_secret_on_any_command_line(tmp_path):
    # Every flag combination, with credentials lying around in the
    # environment: none of them may reach gcloud's argv.
    _, calls = run_deploy(
        tmp_path,
        "--setup-iam",
        "--create-database",
        "--ttl",
        fail="iam service-accounts describe;firestore databases describe",
        DM_PROJECT="my-proj",
        DM_ID_TOKEN="eyJhbGciOiJSUzI1NiJ9.secret-id-token",
        CLOUDSDK_AUTH_ACCESS_TOKEN="ya29.secret-access-token",
    )
    assert len(calls) == 8
    text = json.dumps(calls).lower()
    for needle in ("secret", "token", "ya29", "eyj", "password", "key-file"):
        assert needle not in text


def test_invokers_are_granted_after_the_deploy(tmp_path):
    members = "serviceAccount:tasks@my-proj.iam.gserviceaccount.com,group:ci@x.org"
    result, calls = run_deploy(tmp_path, DM_PROJECT="my-proj", DM_INVOKERS=members)
    assert result.returncode == 0, result.stderr
    assert [call[:2] for call in calls] == [
        ["functions", "deploy"],
        ["functions", "add-invoker-policy-binding"],
        ["functions", "add-invoker-policy-binding"],
        ["functions", "describe"],
    ]
    grants = find(calls, "functions", "add-invoker-policy-binding")
    assert [flags(call)["--member"] for call in grants] == members.split(",")
    assert all(call[2] == "dm-activate-execution" for call in grants)
    assert all(flags(call)["--region"] == "us-central1" for call in grants)


@pytest.mark.parametrize("members", ["allUsers", "allAuthenticatedUsers", "x y"])
def test_invokers_cannot_open_the_endpoint(tmp_path, members):
    # Opening the endpoint to everyone takes --allow-unauthenticated.
    result, calls = run_deploy(tmp_path, DM_PROJECT="my-proj", DM_INVOKERS=members)
    assert result.returncode == 2 and calls == []
    assert "DM_INVOKERS has an unusable value" in result.stderr


def test_unknown_argument_is_refused(tmp_path):
    result, calls = run_deploy(tmp_path, "--yes", DM_PROJECT="my-proj")
    assert result.returncode == 2 and calls == []
    assert "unknown argument: --yes" in result.stderr


def test_help_lists_every_setting(tmp_path):
    result, calls = run_deploy(tmp_path, "--help")
    assert result.returncode == 0 and calls == []
    for word in (
        "DM_PROJECT", "DM_REGION", "DM_FUNCTION", "DM_DATABASE", "DM_COLLECTION",
        "DM_SERVICE_ACCOUNT", "DM_MEMORY", "DM_CPU", "DM_TIMEOUT",
        "DM_MIN_INSTANCES", "DM_MAX_INSTANCES", "DM_CONCURRENCY",
        "DM_FINISHED_TTL_DAYS", "DM_INVOKERS", "--dry-run", "--setup-iam",
        "--create-database", "--ttl", "--allow-unauthenticated",
    ):  # fmt: skip
        assert word in result.stdout
    assert "set -euo" not in result.stdout


def test_deploy_script_parses():
    subprocess.run(["bash", "-n", str(DEPLOY)], check=True)


def test_real_gcloud_knows_every_flag_used(tmp_path):
    """Each command deploy.sh makes names only flags that the installed
    gcloud documents (`--help` works offline)."""
    args = ("--setup-iam", "--create-database", "--ttl")
    fail = "iam service-accounts describe;firestore databases describe"
    _, calls = run_deploy(
        tmp_path,
        *args,
        fail=fail,
        DM_PROJECT="my-proj",
        DM_INVOKERS="group:ci@x.org",
    )
    assert find(calls, "functions", "add-invoker-policy-binding")
    seen = set()
    for call in calls:
        depth = {"iam": 3, "projects": 2, "functions": 2}.get(call[0])
        depth = depth or (4 if call[1] == "fields" else 3)
        command = tuple(call[:depth])
        if command in seen:
            continue
        seen.add(command)
        helptext = subprocess.run(
            ["gcloud", *command, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
                # Offline: no update check, no usage report.
                "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
                "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
                "CLOUDSDK_CONFIG": str(tmp_path / "gcloud-config"),
            },
        ).stdout
        helptext = re.sub(r"\x1b\[[0-9;]*m", "", helptext)
        for name in flags(call):
            assert name in helptext, (command, name)


@pytest.mark.parametrize(
    "env",
    [{"DM_COLLECTION": v} for v in ("dm", "__dm__", "__x", "x__", "a-b_C9", "_" * 4)]
    + [{"DM_FINISHED_TTL_DAYS": v} for v in ("1", "30", "36500", "36501", "99999")],
)
def test_deploy_accepts_only_what_the_function_accepts(tmp_path, env):
    from dm.store import Settings, StoreError

    result, calls = run_deploy(tmp_path, "--ttl", DM_PROJECT="my-proj", **env)
    deployed = bool(find(calls, "functions", "deploy"))
    function_env = {
        "GOOGLE_CLOUD_PROJECT": "my-proj",
        "DM_EXECUTIONS_COLLECTION": env.get("DM_COLLECTION", "dm_executions"),
        "DM_FINISHED_TTL_DAYS": env.get("DM_FINISHED_TTL_DAYS", "30"),
    }
    try:
        Settings.from_env(function_env)
        function_accepts = True
    except StoreError:
        function_accepts = False
    if deployed:
        assert function_accepts, (
            f"deploy.sh shipped settings the function refuses: {env}"
        )
    else:
        assert result.returncode != 0 and env and calls == []


def test_deploy_source_is_the_repository_even_with_cdpath(tmp_path):
    # Run as `bash <repo-name>/deploy.sh` from the repository's parent, with
    # CDPATH naming a directory that holds a decoy of the same name.
    decoy = tmp_path / "decoy" / ROOT.name
    decoy.mkdir(parents=True)
    log = tmp_path / "gcloud-calls.jsonl"
    result = subprocess.run(
        ["bash", f"{ROOT.name}/deploy.sh"],
        env={
            "PATH": f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "FAKE_GCLOUD_LOG": str(log),
            "FAKE_GCLOUD_URL": URL,
            "FAKE_GCLOUD_FAIL": "",
            "DM_PROJECT": "my-proj",
            "CDPATH": str(tmp_path / "decoy"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT.parent,
    )
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    [deploy] = find(calls, "functions", "deploy")
    assert flags(deploy)["--source"] == str(ROOT)

#!/usr/bin/env bash
# Deploys the function as a 2nd-gen Cloud Function (HTTP trigger).
#
#   DM_PROJECT=my-project ./deploy.sh [--dry-run]
#
# Settings (environment):
#   DM_PROJECT       Google Cloud project (required)
#   DM_REGION        region (default us-central1)
#   DM_FUNCTION      function name (default dm-activate-execution)
#   DM_DATABASE      Firestore database (default "(default)")
#   DM_COLLECTION    collection of Executions (default dm_executions)
set -euo pipefail

dry_run=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "deploy.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

: "${DM_PROJECT:?set DM_PROJECT to the Google Cloud project to deploy to}"
region="${DM_REGION:-us-central1}"
name="${DM_FUNCTION:-dm-activate-execution}"
database="${DM_DATABASE:-(default)}"
collection="${DM_COLLECTION:-dm_executions}"

cmd=(gcloud functions deploy "$name"
  --gen2
  --project="$DM_PROJECT"
  --region="$region"
  --runtime=python312
  --source=.
  --entry-point=activate_execution
  --trigger-http
  --no-allow-unauthenticated
  "--set-env-vars=GOOGLE_CLOUD_PROJECT=$DM_PROJECT,DM_FIRESTORE_DATABASE=$database,DM_EXECUTIONS_COLLECTION=$collection")

cd "$(dirname "$0")"
if [ "$dry_run" -eq 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
"${cmd[@]}"

#!/usr/bin/env bash
# Deploys dm.Deps.ActivateExecution as a 2nd-gen Cloud Function (HTTP).
#
#   DM_PROJECT=my-project ./deploy.sh [options]
#
# Options:
#   --dry-run                 print every gcloud command, quoted, run none
#   --setup-iam               create the service account if missing and grant
#                             it Firestore user access (else: print the commands)
#   --create-database         create the Firestore database if it is missing
#   --ttl                     set a TTL policy on the expire_at field, and make
#                             the function write it (see DM_FINISHED_TTL_DAYS)
#   --allow-unauthenticated   let anyone call the endpoint (default: IAM only)
#   -h, --help                show this help
#
# Settings (environment), with defaults:
#   DM_PROJECT              Google Cloud project (required)
#   DM_REGION               region                       us-central1
#   DM_FUNCTION             function name                dm-activate-execution
#   DM_DATABASE             Firestore database ID        (default)
#   DM_DATABASE_LOCATION    location for --create-database  $DM_REGION
#   DM_COLLECTION           collection of Executions     dm_executions
#   DM_SERVICE_ACCOUNT      account the function runs as
#                             dm-activate@$DM_PROJECT.iam.gserviceaccount.com
#   DM_MEMORY               memory per instance          512Mi
#   DM_CPU                  CPUs per instance            1
#   DM_TIMEOUT              request timeout              60s
#   DM_MIN_INSTANCES        instances kept warm          0
#   DM_MAX_INSTANCES        instance ceiling             100
#   DM_CONCURRENCY          requests per instance        16
#   DM_FINISHED_TTL_DAYS    days a finished Execution is kept (with --ttl)  30
#   DM_INVOKERS             comma-separated IAM members granted the right to
#                           call the function, e.g. serviceAccount:tasks@my-
#                           project.iam.gserviceaccount.com       (none)
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "deploy.sh: $*" >&2
  exit 2
}

dry_run=0
setup_iam=0
create_database=0
ttl=0
allow_unauthenticated=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --setup-iam) setup_iam=1 ;;
    --create-database) create_database=1 ;;
    --ttl) ttl=1 ;;
    --allow-unauthenticated) allow_unauthenticated=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

if [ -z "${DM_PROJECT:-}" ]; then
  die "DM_PROJECT is not set: name the Google Cloud project to deploy to, e.g. DM_PROJECT=my-project ./deploy.sh"
fi
project="$DM_PROJECT"
region="${DM_REGION:-us-central1}"
name="${DM_FUNCTION:-dm-activate-execution}"
database="${DM_DATABASE:-(default)}"
database_location="${DM_DATABASE_LOCATION:-$region}"
collection="${DM_COLLECTION:-dm_executions}"
service_account="${DM_SERVICE_ACCOUNT:-dm-activate@$project.iam.gserviceaccount.com}"
memory="${DM_MEMORY:-512Mi}"
cpu="${DM_CPU:-1}"
timeout="${DM_TIMEOUT:-60s}"
min_instances="${DM_MIN_INSTANCES:-0}"
max_instances="${DM_MAX_INSTANCES:-100}"
concurrency="${DM_CONCURRENCY:-16}"
ttl_days="${DM_FINISHED_TTL_DAYS:-30}"
invokers="${DM_INVOKERS:-}"

# Values end up inside --set-env-vars (comma separated) and resource names:
# refuse anything that would change their meaning.
check() {
  local var="$1" value="$2" pattern="$3"
  [[ "$value" =~ ^($pattern)$ ]] || die "$var has an unusable value: '$value'"
}
check DM_PROJECT "$project" '[a-z][a-z0-9:.-]{3,62}'
check DM_REGION "$region" '[a-z]+-[a-z]+[0-9]+'
check DM_FUNCTION "$name" '[a-z][a-z0-9-]{0,62}'
check DM_DATABASE "$database" '\(default\)|[a-z][a-z0-9-]{2,61}[a-z0-9]'
check DM_DATABASE_LOCATION "$database_location" '[a-z0-9-]+'
check DM_COLLECTION "$collection" '[A-Za-z0-9_-]{1,100}'
check DM_SERVICE_ACCOUNT "$service_account" '[a-z0-9][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.:-]+\.gserviceaccount\.com'
check DM_MEMORY "$memory" '[0-9]+(Mi|Gi|M|G)'
check DM_CPU "$cpu" '[0-9]+(\.[0-9]+)?'
check DM_TIMEOUT "$timeout" '[0-9]+s?'
check DM_MIN_INSTANCES "$min_instances" '[0-9]+'
check DM_MAX_INSTANCES "$max_instances" '[0-9]+'
check DM_CONCURRENCY "$concurrency" '[0-9]+'
check DM_FINISHED_TTL_DAYS "$ttl_days" '[1-9][0-9]{0,4}'
# What the function itself refuses at start (dm/store.py, Settings), refused
# here too, so that no deploy ships a revision that answers "not configured".
[[ "$collection" == __*__ ]] && die "DM_COLLECTION may not be of the reserved form __name__: '$collection'"
((10#$ttl_days <= 36500)) || die "DM_FINISHED_TTL_DAYS must be 1 to 36500 days: '$ttl_days'"
sa_name="${service_account%%@*}"
members=()
if [ -n "$invokers" ]; then
  IFS=, read -r -a members <<<"$invokers"
  for member in "${members[@]}"; do
    check DM_INVOKERS "$member" '(user|serviceAccount|group|domain|principal|principalSet):[^[:space:],]+'
  done
fi

# Prints a command so that it can be pasted into a shell.
show() {
  local quoted
  printf -v quoted '%q ' "$@"
  echo "${quoted% }"
}

# Runs a command, or only prints it under --dry-run.
run() {
  if [ "$dry_run" -eq 1 ]; then
    show "$@"
  else
    echo "+ $(show "$@")" >&2
    "$@"
  fi
}

# The service account and the one role it needs: read and write documents
# (roles/datastore.user). It gets no other role.
sa_create=(gcloud iam service-accounts create "$sa_name"
  --project="$project"
  --display-name="DM ActivateExecution function")
sa_grant=(gcloud projects add-iam-policy-binding "$project"
  --member="serviceAccount:$service_account"
  --role=roles/datastore.user
  --condition=None)

if [ "$setup_iam" -eq 1 ]; then
  if [ "$dry_run" -eq 1 ]; then
    show gcloud iam service-accounts describe "$service_account" --project="$project"
    echo "# if it does not exist:"
    show "${sa_create[@]}"
  elif ! gcloud iam service-accounts describe "$service_account" \
      --project="$project" >/dev/null 2>&1; then
    run "${sa_create[@]}"
  fi
  run "${sa_grant[@]}"
else
  {
    echo "# The function runs as $service_account, which needs only"
    echo "# Firestore user access. Once per project (or pass --setup-iam):"
    echo "#   $(show "${sa_create[@]}")"
    echo "#   $(show "${sa_grant[@]}")"
  } >&2
fi

if [ "$create_database" -eq 1 ]; then
  db_create=(gcloud firestore databases create
    --project="$project"
    --database="$database"
    --location="$database_location"
    --type=firestore-native)
  if [ "$dry_run" -eq 1 ]; then
    show gcloud firestore databases describe --project="$project" --database="$database"
    echo "# if it does not exist:"
    show "${db_create[@]}"
  elif ! gcloud firestore databases describe --project="$project" \
      --database="$database" >/dev/null 2>&1; then
    run "${db_create[@]}"
  fi
fi

env_vars="GOOGLE_CLOUD_PROJECT=$project,DM_FIRESTORE_DATABASE=$database,DM_EXECUTIONS_COLLECTION=$collection"
if [ "$ttl" -eq 1 ]; then
  env_vars+=",DM_FINISHED_TTL_DAYS=$ttl_days"
  # Firestore deletes a document some time (typically within a day) after
  # the time in its expire_at field; the function sets that field when it
  # finishes an Execution.
  run gcloud firestore fields ttls update expire_at \
    --project="$project" \
    --database="$database" \
    --collection-group="$collection" \
    --enable-ttl \
    --async
fi

if [ "$allow_unauthenticated" -eq 1 ]; then
  auth_flag=--allow-unauthenticated
  echo "deploy.sh: WARNING: --allow-unauthenticated: anyone may call the function" >&2
else
  auth_flag=--no-allow-unauthenticated
fi

# CDPATH would make cd print the directory, doubling it in $root.
root="$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)"
run gcloud functions deploy "$name" \
  --gen2 \
  --quiet \
  --project="$project" \
  --region="$region" \
  --runtime=python312 \
  --source="$root" \
  --entry-point=activate_execution \
  --trigger-http \
  "$auth_flag" \
  --service-account="$service_account" \
  --memory="$memory" \
  --cpu="$cpu" \
  --timeout="$timeout" \
  --min-instances="$min_instances" \
  --max-instances="$max_instances" \
  --concurrency="$concurrency" \
  --set-env-vars="$env_vars"

# Who may call it. Without anyone here, only principals that already hold
# roles/run.invoker (or Owner) can.
if [ "${#members[@]}" -eq 0 ] && [ "$allow_unauthenticated" -eq 0 ]; then
  echo "# No DM_INVOKERS: only principals already holding roles/run.invoker can call it." >&2
fi
for member in "${members[@]}"; do
  run gcloud functions add-invoker-policy-binding "$name" \
    --project="$project" \
    --region="$region" \
    --member="$member"
done

describe=(gcloud functions describe "$name"
  --project="$project"
  --region="$region"
  --format=value\(serviceConfig.uri\))
if [ "$dry_run" -eq 1 ]; then
  show "${describe[@]}"
  exit 0
fi
url="$("${describe[@]}")"
[ -n "$url" ] || die "the function deployed but gcloud reported no URL"
echo "function URL: $url"
echo "pRPC URL:     $url/prpc/dm.Deps/ActivateExecution"
echo "activate with: python -m dm activate --url $url --auth-file AUTH.json"

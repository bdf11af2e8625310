#!/usr/bin/env bash
# Make a deployment's bearer tokens, one per server, into two env files
# (KEY=VALUE lines) that are never committed (.gitignore has deploy/secrets/):
#
#   secrets/trainer.env  TRAINER_AUTH_TOKENS (the Trainer accepts it) and
#                        TRAINER_TOKEN (what `trainer start ...` in its container sends)
#   secrets/labeler.env  LABELER_AUTH_TOKENS and TEXT_LABELER_TOKEN (`labeler classify`)
#
# Docker Compose reads them as each service's env_file (compose.yaml);
# Kubernetes gets them as two Secrets (docs/deploy.md):
#   kubectl -n text-labeler create secret generic trainer-auth --from-env-file=deploy/secrets/trainer.env
#   kubectl -n text-labeler create secret generic labeler-auth --from-env-file=deploy/secrets/labeler.env
# Clients send the token as `authorization: Bearer <token>`. A file that
# exists is kept (delete it to make a new token; docs/deploy.md: rotation).
#
# Usage: make-tokens.sh [DIR]   (default: secrets/ beside this script)
set -euo pipefail
dir="${1:-$(dirname "$0")/secrets}"
umask 077
mkdir -p "$dir"

token() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

write() {
  local file="$dir/$1" server_var="$2" client_var="$3" value
  if [ -e "$file" ]; then
    echo "$file exists: kept" >&2
    return
  fi
  value=$(token)
  printf '# Made by deploy/make-tokens.sh; never commit this file.\n%s=%s\n%s=%s\n' \
    "$server_var" "$value" "$client_var" "$value" > "$file"
  echo "wrote $file"
}

write trainer.env TRAINER_AUTH_TOKENS TRAINER_TOKEN
write labeler.env LABELER_AUTH_TOKENS TEXT_LABELER_TOKEN

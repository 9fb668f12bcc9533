#!/usr/bin/env bash
# The demo: SQLite, the demo mailboxes, the stand-in Pro Santé Connect and the portal, on
# loopback. Ctrl-C stops everything it started. Run through `make demo` (which makes the venv).
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${DEMO_PORT:-8000}
PSC_PORT=${DEMO_PSC_PORT:-19220}
PY=.venv/bin/python
export DEBUG=1
export SEED_KEYRING_FILE=var/demo-keyring.json
export PSC_ENVIRONMENT=standin
export PSC_ISSUER="http://127.0.0.1:${PSC_PORT}"
export PSC_CLIENT_ID=portal
export PSC_CLIENT_SECRET=demo-portal-secret-0123456789abcdef0123456789
# The portal on "localhost" and PSC on "127.0.0.1": two hosts, so their cookies stay apart.
SITE="http://localhost:${PORT}"

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "make demo needs Node.js and npm (apt-get install nodejs npm)"; exit 1; }
done
[ -d deploy/dev-psc/node_modules ] || (cd deploy/dev-psc && npm ci --no-audit --no-fund --silent)

mkdir -p var
[ -f "$SEED_KEYRING_FILE" ] || $PY manage.py seed_key new --file "$SEED_KEYRING_FILE"
$PY manage.py migrate --verbosity 0
$PY manage.py import_mailboxes deploy/demo/mailboxes.csv

pids=()
stop() { trap - EXIT INT TERM; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

PSC_PORT=$PSC_PORT RP_REDIRECT_URIS="${SITE}/oidc/callback/" RP_POST_LOGOUT_URIS="${SITE}/" \
  RP_CLIENT_SECRET="$PSC_CLIENT_SECRET" node deploy/dev-psc/psc.mjs > var/demo-psc.log 2>&1 &
pids+=($!)
$PY manage.py runserver "localhost:${PORT}" --noreload > var/demo-portal.log 2>&1 &
pids+=($!)

for _ in $(seq 50); do
  curl -fs -o /dev/null "${SITE}/" && curl -fs -o /dev/null "${PSC_ISSUER}/.well-known/openid-configuration" && break
  sleep 0.2
done

cat <<TXT

  The demo is running. Open ${SITE}/ and choose "Se connecter avec Pro Santé Connect".
  The stand-in PSC lets you pick who you are:
    Claire Martin  899700000001  doctor, personal mailbox claire.martin@demo.mssante.fr
    Sofia Benali   899700000002  nurse, shares accueil@clinique-demo.mssante.fr
    Luc Moreau     899700000003  nurse, shares accueil@clinique-demo.mssante.fr
    Paul Inconnu   899700000099  known to PSC, unknown to this operator (refused)
  Logs: var/demo-portal.log, var/demo-psc.log. Ctrl-C stops the demo.

TXT
wait -n "${pids[@]}"

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
IMAPS_PORT=${DEMO_IMAPS_PORT:-1993}  # nginx's IMAP listeners: IMAPS, and STARTTLS only
IMAP_PORT=${DEMO_IMAP_PORT:-1143}
BACKEND_PORT=${DEMO_BACKEND_PORT:-1144}
export NGINX_AUTH_SECRET=demo-nginx-shared-secret
export MAIL_BACKEND_TOKEN=demo-backend-token-0123456789abcdef0123
export MAIL_BACKEND_IMAP="127.0.0.1:${BACKEND_PORT}"
export MAIL_IMAP_HOST=127.0.0.1 MAIL_IMAP_PORT="$IMAPS_PORT"
export MAIL_SMTP_HOST=""  # the demo runs no Postfix: the done page leaves SMTP out
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
# A staff account for the helpdesk and audit pages; its first login enrols FreeOTP, with the
# one-time enrolment token that each start gives it until then.
DEMO_STAFF_PASSWORD=${DEMO_STAFF_PASSWORD:-Violon-Agrafe-Tulipe-7}
$PY manage.py staff list | grep -q '^demo-helpdesk' || printf '%s\n' "$DEMO_STAFF_PASSWORD" |
  $PY manage.py staff create demo-helpdesk --role helpdesk --role auditor --password-stdin >/dev/null
staff_enrolment="its phone is enrolled"
if $PY manage.py staff list | grep -q "^demo-helpdesk	[^	]*	-	"; then
  token=$($PY manage.py staff enrolment-token demo-helpdesk | sed -n 's/^One-time enrolment token.*: //p')
  staff_enrolment="the first login asks for the one-time enrolment token ${token}, then enrols FreeOTP for the staff code"
fi

pids=()
stop() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -z "${run_dir:-}" ] || rm -rf "$run_dir"
}
trap stop EXIT INT TERM

PSC_PORT=$PSC_PORT RP_REDIRECT_URIS="${SITE}/oidc/callback/" RP_POST_LOGOUT_URIS="${SITE}/" \
  RP_CLIENT_SECRET="$PSC_CLIENT_SECRET" node deploy/dev-psc/psc.mjs > var/demo-psc.log 2>&1 &
pids+=($!)
$PY manage.py runserver "localhost:${PORT}" --noreload > var/demo-portal.log 2>&1 &
pids+=($!)

# The mail path, when Debian's nginx mail module and Dovecot are installed: nginx, over TLS
# with a self-signed certificate, asks the portal about every login, then proxies to a
# Dovecot that trusts it. IMAP only: the demo has no Postfix, so mail.conf's SMTP listeners
# are put on sockets in the run folder, where no mail client looks.
render() {  # render TEMPLATE TARGET NAME=VALUE...: deploy/'s ${NAME} placeholders filled in
  $PY - "$@" <<'PY'
import sys
from pathlib import Path
from string import Template
template, target, *pairs = sys.argv[1:]
Path(target).write_text(Template(Path(template).read_text()).substitute(dict(p.split("=", 1) for p in pairs)))
PY
}
mail_stack=no
if [ -e /usr/lib/nginx/modules/ngx_mail_module.so ] && command -v dovecot >/dev/null &&
   command -v openssl >/dev/null && [ "$(id -u)" = 0 ]; then
  # Under /var/tmp, not the checkout: Dovecot's mail user must traverse every parent folder,
  # and a checkout under /root is private to root. A folder of its own (mktemp): a fixed name
  # in a folder everyone writes to could be made beforehand by anyone.
  run_dir=$(mktemp -d /var/tmp/mss-totp-demo-mail.XXXXXX)
  mkdir "$run_dir/mail" && chmod 755 "$run_dir" && chown 19100:19100 "$run_dir/mail"
  render deploy/dovecot/backend.conf "$run_dir/dovecot.conf" RUN_DIR="$run_dir" MAIL_UID=19100 \
    NGINX_ADDRESS=127.0.0.1 LISTEN_IMAP="$BACKEND_PORT" BACKEND_TOKEN="$MAIL_BACKEND_TOKEN"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
    -keyout "$run_dir/mail.key" -out "$run_dir/mail.crt" 2>/dev/null
  render deploy/nginx/mail.conf "$run_dir/nginx.conf" RUN_DIR="$run_dir" SERVER_NAME=localhost \
    AUTH_HTTP="127.0.0.1:${PORT}/internal/nginx-auth" AUTH_SECRET="$NGINX_AUTH_SECRET" \
    TLS_CERT="$run_dir/mail.crt" TLS_KEY="$run_dir/mail.key" \
    LISTEN_IMAPS="127.0.0.1:${IMAPS_PORT}" LISTEN_IMAP="127.0.0.1:${IMAP_PORT}" \
    LISTEN_SMTPS="unix:$run_dir/smtps.sock" LISTEN_SUBMISSION="unix:$run_dir/submission.sock"
  chmod 600 "$run_dir/dovecot.conf" "$run_dir/nginx.conf"  # they hold the demo's shared secrets
  dovecot -F -c "$run_dir/dovecot.conf" > var/demo-dovecot.log 2>&1 &
  pids+=($!)
  nginx -c "$run_dir/nginx.conf" -p "$run_dir" > var/demo-nginx.log 2>&1 &
  pids+=($!)
  mail_stack=yes
fi

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
  Staff: ${SITE}/staff/login/ as demo-helpdesk, password ${DEMO_STAFF_PASSWORD} (the demo's
  own, from DEMO_STAFF_PASSWORD); ${staff_enrolment}.
  Logs: var/demo-portal.log, var/demo-psc.log. Ctrl-C stops the demo.

TXT
if [ "$mail_stack" = yes ]; then
  cat <<TXT
  Mail: nginx's IMAP proxy listens on 127.0.0.1:${IMAPS_PORT} (IMAPS; STARTTLS on ${IMAP_PORT}),
  its certificate self-signed (${run_dir}/mail.crt). Enrol FreeOTP and choose a mail
  password in the portal, then log in with the mailbox address and the password immediately
  followed by the 6-digit code, for example:
    python3 -c "import imaplib, ssl; m = imaplib.IMAP4_SSL('127.0.0.1', ${IMAPS_PORT}, ssl_context=ssl._create_unverified_context()); print(m.login('claire.martin@demo.mssante.fr', input('password+code: ')))"

TXT
else
  cat <<'TXT'
  Mail: not started. For the IMAP proxy, as root: apt-get install nginx libnginx-mod-mail
  dovecot-core dovecot-imapd openssl, then make demo again.

TXT
fi
wait -n "${pids[@]}"

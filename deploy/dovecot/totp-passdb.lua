-- Dovecot 2.3 Lua passdb: asks the portal's verifier (POST /api/v1/verify) about every login.
-- The password field holds the mail password followed by the 6-digit code; the verifier
-- decides (mail sessions, throttling, organisational mailboxes) and this script only relays.
-- Placeholders: ${VERIFY_URL} the API's URL (web.conf's internal listener or a node's
-- verifier pool, never its portal pool); ${VERIFY_KEY} a key from
-- `manage.py api_key create NAME`. Keep this file readable by root and dovecot only.
local VERIFY_URL = "${VERIFY_URL}"
local VERIFY_KEY = "${VERIFY_KEY}"

local http_client = dovecot.http.client {
  timeout = 5000;      -- ms (Dovecot 2.3 names)
  max_attempts = 1;
}

local function json_string(s)
  -- JSON string escaping; UTF-8 bytes pass through unchanged.
  return '"' .. s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

-- The services the API knows (its "protocol"); any other (managesieve's own name, lmtp) is
-- counted as IMAP.
local PROTOCOLS = { imap = true, pop3 = true, smtp = true, submission = true, sieve = true }

function auth_password_verify(req, password)
  local body = "{" ..
    '"mailbox":' .. json_string(req.user) .. "," ..
    '"secret":' .. json_string(password) .. "," ..
    '"client_ip":' .. json_string(req.remote_ip or "") .. "," ..
    '"protocol":' .. json_string(PROTOCOLS[req.service] and req.service or "imap") .. "}"
  local request = http_client:request { url = VERIFY_URL; method = "POST"; }
  request:add_header("Authorization", "Bearer " .. VERIFY_KEY)
  request:add_header("Content-Type", "application/json")
  request:set_payload(body)
  local response = request:submit()
  local outcome = response:header("X-Verify-Outcome")
  if response:status() == 200 and outcome == "ok" then
    return dovecot.auth.PASSDB_RESULT_OK, ""
  end
  if response:status() == 200 and outcome == "reject" then
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "invalid login or password"
  end
  if response:status() == 400 and outcome == "reject" then
    -- The API refused the request itself (a password that is not UTF-8, an overlong name):
    -- the client's credential is at fault, and a temporary failure would have it retry
    -- forever. Another 400 (a proxy's, or Django's for a Host it does not serve) is a
    -- set-up fault, not a wrong password: it falls through to a temporary failure.
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "invalid login or password"
  end
  -- 503 (temporary failure), an unreachable verifier, anything unexpected: never a success.
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE,
    "verifier answered " .. tostring(response:status())
end

function script_init() return 0 end
function script_deinit() end

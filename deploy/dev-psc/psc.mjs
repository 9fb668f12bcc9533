// Stand-in for Pro Santé Connect (PSC), for the demo and the tests only: a real OpenID provider
// (panva/oidc-provider, OpenID Certified) on loopback, serving PSC's claims for demo professionals.
// Production points the portal at PSC by configuration; nothing in the portal starts this file.
//
// Env: PSC_PORT (19220), PSC_ISSUER (http://127.0.0.1:PORT), RP_REDIRECT_URIS and
// RP_POST_LOGOUT_URIS (comma-separated), RP_CLIENT_SECRET, PSC_AUTO_LOGIN (a national id: skip the
// login form, for tests).
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const PORT = Number(process.env.PSC_PORT || 19220);
const ISSUER = process.env.PSC_ISSUER || `http://127.0.0.1:${PORT}`;
const AUTO = process.env.PSC_AUTO_LOGIN || '';
const list = (name, fallback) => (process.env[name] || fallback).split(',').filter(Boolean);
const REDIRECT_URIS = list('RP_REDIRECT_URIS', 'http://localhost:8000/oidc/callback/');
const LOGOUT_URIS = list('RP_POST_LOGOUT_URIS', 'http://localhost:8000/');
const SECRET = process.env.RP_CLIENT_SECRET || 'demo-portal-secret-0123456789abcdef0123456789';

// Demo professionals, with claims shaped like PSC's userinfo (scope_all).
function professional(id, civilite, given, family, profession, structure) {
  return {
    SubjectNameID: id, preferred_username: id, given_name: given, family_name: family,
    SubjectRole: [`${profession}^1.2.250.1.213.1.1.5.5`],
    otherIds: [{ identifiant: id.slice(1), origine: 'RPPS', qualite: 1 }],
    SubjectRefPro: { codeCivilite: civilite, exercices: [{
      codeProfession: profession, codeCategorieProfessionnelle: 'C',
      nomDexercice: family, prenomDexercice: given,
      activities: [{ raisonSocialeSite: structure, codePostal: '75009' }] }] },
  };
}
const USERS = {
  '899700000001': professional('899700000001', 'MME', 'Claire', 'Martin', '10', 'Cabinet Martin'),
  '899700000002': professional('899700000002', 'MME', 'Sofia', 'Benali', '60', 'Clinique Démo'),
  '899700000003': professional('899700000003', 'M', 'Luc', 'Moreau', '60', 'Clinique Démo'),
  '899700000099': professional('899700000099', 'M', 'Paul', 'Inconnu', '10', 'Ailleurs'),
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'standin-rs256', alg: 'RS256', use: 'sig' };
const client = (id, extra = {}) => ({
  client_id: id, client_secret: SECRET, redirect_uris: REDIRECT_URIS,
  post_logout_redirect_uris: LOGOUT_URIS, grant_types: ['authorization_code'],
  response_types: ['code'], token_endpoint_auth_method: 'client_secret_post',
  // PSC (a Keycloak) puts auth_time in every ID token; the portal's recent-login rule needs it.
  require_auth_time: true, ...extra,
});

const provider = new Provider(ISSUER, {
  clients: [
    client('portal'),
    client('portal-hs256', { id_token_signed_response_alg: 'HS256' }),  // PSC has used both
    client('another-service'),  // a different relying party: its tokens must not open our portal
  ],
  jwks: { keys: [jwk] },
  scopes: ['openid', 'scope_all'],
  claims: { openid: ['sub'], scope_all: ['SubjectNameID', 'SubjectRefPro', 'SubjectRole', 'otherIds',
    'given_name', 'family_name', 'preferred_username'] },
  // 'eidas1' is what PSC gives; 'eidas0' exists here only so that tests can ask for a weaker level.
  acrValues: ['eidas1', 'eidas0'],
  pkce: { required: () => true },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'HS256'] },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true, logoutSource },
  },
  cookies: { keys: ['stand-in-psc-cookie-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    if (!USERS[sub]) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...USERS[sub] }) };
  },
});

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html lang="fr"><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>${title}</title>
<body style="font-family:system-ui;max-width:40rem;margin:2rem auto;padding:0 1rem">
<p><strong>Pro Santé Connect — bouchon de démonstration</strong></p>${body}</body></html>`;

async function logoutSource(ctx, form) {
  ctx.body = page('Déconnexion', `<h1>Déconnexion</h1>${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Se déconnecter</button>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

function loginForm(uid) {
  const options = Object.entries(USERS).map(([id, u]) =>
    `<option value="${esc(id)}">${esc(u.given_name)} ${esc(u.family_name)} (${esc(id)})</option>`).join('');
  return page('Connexion', `<h1>Connexion avec une carte CPS ou e-CPS (test)</h1>
<form method="post" action="/interaction/${esc(uid)}/login">
<label for="sub">Professionnel</label> <select id="sub" name="sub">${options}</select>
<button type="submit" name="action" value="login">Se connecter</button>
<button type="submit" name="action" value="cancel">Annuler</button></form>`);
}

// Login (a form to pick a demo professional, or PSC_AUTO_LOGIN) and automatic consent.
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([\w-]+)(\/login)?$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    let sub = AUTO;
    if (!sub && ctx.method === 'POST' && m[2]) {
      const form = await readForm(ctx.req);
      if (form.action === 'cancel') {
        result = { error: 'access_denied', error_description: 'login cancelled by the user' };
      } else {
        sub = form.sub;
      }
    }
    if (!result && !USERS[sub]) {
      ctx.type = 'html';
      ctx.body = loginForm(details.uid);
      return undefined;
    }
    if (!result) {
      const asked = String(params.acr_values || '').split(' ')[0];
      const acr = ['eidas1', 'eidas0'].includes(asked) ? asked : 'eidas1';
      result = { login: { accountId: sub, acr, amr: ['mfa'] } };
    }
  } else if (prompt.name === 'consent') {
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    result = { consent: { grantId: await grant.save() } };
  }
  ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false }));
  return undefined;
});

provider.listen(PORT, '127.0.0.1', () => console.log(`stand-in PSC ready at ${ISSUER}`));

// oidc-provider (an OpenID-certified authorization server) and a resource
// server that verifies what it receives the way a real API does, in one
// process, for authproxy's integration tests (started by
// tests/support/oidc.rs).
//
//   node server.mjs CONFIG.json      (or the JSON on stdin)
//
// Listens on 127.0.0.1:0 and prints `LISTENING <port>` on stdout once it
// serves; the issuer is http(s)://127.0.0.1:<port>. Everything else goes to
// stderr, and nothing here prints a secret, a token or a proof.
//
// Config (built by tests/support/oidc.rs, `OidcConfig`): `clients` (client
// metadata as oidc-provider takes it), `ttl` (seconds per token kind),
// `dpop_nonce` (token endpoint demands a DPoP nonce), `rs_dpop_nonce` (so
// does the resource server), `rotate_refresh_token`, `device_interval`,
// `tls` ({cert, key, client_ca} PEM: https + tls_client_auth).
//
//   /.well-known/openid-configuration, /auth, /token, /device, ...  oidc-provider
//   /api/**            the resource server (audience `<issuer>/api`)
//   GET /_test/requests   what the resource server saw, in order
//   GET /_test/grants     token endpoint outcomes, in order
//   POST /_test/rs-nonce  the resource server picks a new DPoP nonce
import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

// oidc-provider prints notices with console.info; stdout is only for the port line.
console.log = console.error;
console.info = console.error;

const config = JSON.parse(readFileSync(process.argv[2] ?? 0, 'utf8'));
const SCOPES = 'api:read api:write';
// How far a DPoP proof's iat may be from the resource server's clock (s).
const IAT_WINDOW = 60;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'as-rs256', alg: 'RS256', use: 'sig' };
// The key /jwks publishes: what a resource server would fetch and cache.
const publicJwks = jose.createLocalJWKSet({
  keys: [{ ...crypto.createPublicKey(privateKey).export({ format: 'jwk' }), kid: 'as-rs256', alg: 'RS256', use: 'sig' }],
});

const tls = config.tls;
const server = tls
  // The client certificate is asked for but judged per client by oidc-provider
  // (features.mTLS below), like a TLS-terminating AS does.
  ? https.createServer({ cert: tls.cert, key: tls.key, ca: tls.client_ca, requestCert: true, rejectUnauthorized: false })
  : http.createServer();

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const provider = makeProvider(issuer);
  const providerCallback = provider.callback();
  const rs = makeResourceServer(issuer);
  server.on('request', (req, res) => {
    const path = req.url.split('?')[0];
    if (path.startsWith('/api/') || path === '/api') {
      rs.handle(req, res).catch((err) => {
        console.error('resource server error', err);
        res.writeHead(500).end();
      });
    } else if (path.startsWith('/_test/')) {
      rs.test(req, res, path);
    } else {
      providerCallback(req, res);
    }
  });
  process.stdout.write(`LISTENING ${port}\n`);
});

const grants = [];

function makeProvider(issuer) {
  const resource = `${issuer}/api`;
  const mtls = tls
    ? {
      enabled: true,
      tlsClientAuth: true,
      certificateBoundAccessTokens: true,
      getCertificate: (ctx) => ctx.socket.getPeerX509Certificate?.(),
      certificateAuthorized: (ctx) => ctx.socket.authorized,
      certificateSubjectMatches: (ctx, property, expected) => {
        const cert = ctx.socket.getPeerX509Certificate();
        switch (property) {
          case 'tls_client_auth_subject_dn':
            return cert.subject.replaceAll('\n', ',') === expected;
          case 'tls_client_auth_san_dns':
            return (cert.subjectAltName ?? '').split(', ').includes(`DNS:${expected}`);
          default:
            return false;
        }
      },
    }
    : { enabled: false };

  const provider = new Provider(issuer, {
    clients: config.clients ?? [],
    jwks: { keys: [signingJwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    clientAuthMethods: [
      'none', 'client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt',
      ...(tls ? ['tls_client_auth'] : []),
    ],
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      dPoP: {
        enabled: true,
        nonceSecret: crypto.randomBytes(32),
        requireNonce: () => Boolean(config.dpop_nonce),
      },
      mTLS: mtls,
      resourceIndicators: {
        enabled: true,
        // Tokens are for the API at /api/ unless a request names another
        // resource, so every access token is a JWT it can verify (with
        // cnf.jkt when DPoP-bound), with or without `resource`.
        defaultResource: () => resource,
        useGrantedResource: () => true,
        // `<issuer>/other-api` is another API: its tokens are refused at /api/.
        getResourceServerInfo: (ctx, indicator) => {
          if (indicator !== resource && indicator !== `${issuer}/other-api`) throw new errors.InvalidTarget();
          return { scope: SCOPES, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
        },
      },
    },
    // Like most providers: a client allowed the refresh_token grant gets one
    // from authorization_code and device_code, offline_access or not.
    issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // true: every use rotates, and a spent refresh token revokes the grant.
    rotateRefreshToken: config.rotate_refresh_token ?? true,
    // Numbers for what we use (oidc-provider's defaults, without the notice
    // that its default functions print), then the test's own.
    ttl: {
      AccessToken: 3600, ClientCredentials: 600, RefreshToken: 14 * 86400, DeviceCode: 600, ...config.ttl,
    },
  });

  if (config.device_interval) {
    // oidc-provider sends no `interval` (clients then wait 5 s, RFC 8628
    // §3.2); a shorter one keeps the device-flow tests quick.
    provider.use(async (ctx, next) => {
      await next();
      if (ctx.oidc?.route === 'device_authorization' && ctx.status === 200) {
        ctx.body = { ...ctx.body, interval: config.device_interval };
      }
    });
  }

  provider.on('grant.success', (ctx) => grants.push(grantRecord(ctx)));
  provider.on('grant.error', (ctx, err) => {
    grants.push({ ...grantRecord(ctx), error: err.error, error_description: err.error_description });
  });
  for (const event of ['grant.error', 'authorization.error', 'device_authorization.error', 'code_verification.error',
    'revocation.error', 'introspection.error', 'discovery.error', 'server_error']) {
    provider.on(event, (ctx, err) => {
      console.error(`oidc-provider ${event}: ${err.error ?? err.name}: ${err.error_description ?? err.message}`
        + `${err.error_detail ? ` (${err.error_detail})` : ''}`);
    });
  }
  return provider;
}

function grantRecord(ctx) {
  const token = ctx.oidc.entities?.AccessToken ?? ctx.oidc.entities?.ClientCredentials;
  return {
    grant_type: ctx.oidc.params?.grant_type,
    client_id: ctx.oidc.client?.clientId ?? ctx.oidc.params?.client_id,
    client_auth_method: ctx.oidc.client?.clientAuthMethod,
    token_jti: token?.jti,
    dpop_jkt: token?.jkt,
  };
}

function makeResourceServer(issuer) {
  const resource = `${issuer}/api`;
  const requests = [];
  const seenJti = new Map(); // proof jti -> iat, forgotten once outside the window
  let rsNonce = crypto.randomBytes(16).toString('base64url');

  class Refused extends Error {
    constructor(scheme, error, description, extra = {}) {
      super(description);
      Object.assign(this, { scheme, error, extra });
    }
  }

  async function verifyAccessToken(token, scheme) {
    let payload;
    try {
      ({ payload } = await jose.jwtVerify(token, publicJwks, {
        issuer, audience: resource, typ: 'at+jwt', algorithms: ['RS256'],
      }));
    } catch (err) {
      // The jose error says which check failed: signature, "exp" claim, "aud" claim, ...
      throw new Refused(scheme, 'invalid_token', `access token: ${err.message}`);
    }
    return payload;
  }

  // RFC 9449 §4.3 and §7.1.
  async function verifyProof(req, proof, token, payload) {
    const fail = (why) => { throw new Refused('DPoP', 'invalid_dpop_proof', why); };
    let proofPayload;
    let header;
    try {
      ({ payload: proofPayload, protectedHeader: header } = await jose.jwtVerify(proof, jose.EmbeddedJWK, {
        typ: 'dpop+jwt', algorithms: ['ES256', 'RS256', 'PS256', 'EdDSA'],
      }));
    } catch (err) {
      fail(`DPoP proof: ${err.message}`);
    }
    if (header.jwk.d !== undefined) fail('DPoP proof jwk holds a private key');
    if (proofPayload.htm !== req.method) fail('DPoP proof htm mismatch');
    let htu;
    try {
      htu = new URL(proofPayload.htu);
    } catch {
      fail('DPoP proof htu is not a URL');
    }
    htu.search = '';
    htu.hash = '';
    const expected = new URL(req.url, issuer);
    expected.search = '';
    if (htu.href !== expected.href) fail(`DPoP proof htu mismatch (expected ${expected.href})`);
    const now = Math.floor(Date.now() / 1000);
    if (typeof proofPayload.iat !== 'number' || Math.abs(now - proofPayload.iat) > IAT_WINDOW) {
      fail('DPoP proof iat outside the window');
    }
    for (const [jti, iat] of seenJti) if (Math.abs(now - iat) > IAT_WINDOW) seenJti.delete(jti);
    if (typeof proofPayload.jti !== 'string' || !proofPayload.jti) fail('DPoP proof jti missing');
    if (seenJti.has(proofPayload.jti)) fail('DPoP proof jti replayed');
    seenJti.set(proofPayload.jti, proofPayload.iat);
    const ath = jose.base64url.encode(crypto.createHash('sha256').update(token).digest());
    if (proofPayload.ath !== ath) fail('DPoP proof ath mismatch');
    const jkt = await jose.calculateJwkThumbprint(header.jwk);
    if (payload.cnf?.jkt !== jkt) {
      throw new Refused('DPoP', 'invalid_token', 'access token cnf.jkt does not match the DPoP proof key');
    }
    if (config.rs_dpop_nonce && proofPayload.nonce !== rsNonce) {
      throw new Refused('DPoP', 'use_dpop_nonce', 'resource server requires a DPoP nonce', { 'DPoP-Nonce': rsNonce });
    }
    return jkt;
  }

  async function handle(req, res) {
    const url = new URL(req.url, issuer);
    const record = { method: req.method, path: url.pathname };
    requests.push(record);
    let scheme;
    try {
      const authorization = req.headers.authorization ?? '';
      const [given, token, more] = authorization.split(' ');
      scheme = given?.toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer';
      record.scheme = authorization ? scheme : undefined;
      if (!authorization) throw new Refused('Bearer', undefined, 'no Authorization header');
      if (!token || more !== undefined || !['bearer', 'dpop'].includes(given.toLowerCase())) {
        throw new Refused('Bearer', 'invalid_request', 'Authorization is not "Bearer <token>" or "DPoP <token>"');
      }
      const payload = await verifyAccessToken(token, scheme);
      record.client_id = payload.client_id;
      record.sub = payload.sub;
      record.token_jti = payload.jti;
      const x5t = payload.cnf?.['x5t#S256'];
      if (x5t !== undefined) {
        // RFC 8705 §3: a certificate-bound token comes with that certificate.
        const cert = req.socket.getPeerX509Certificate?.();
        const presented = cert && jose.base64url.encode(crypto.createHash('sha256').update(cert.raw).digest());
        if (presented !== x5t) throw new Refused(scheme, 'invalid_token', 'access token cnf.x5t#S256 does not match the client certificate');
      }
      if (scheme === 'DPoP') {
        const proofs = req.headersDistinct.dpop ?? [];
        if (proofs.length !== 1) throw new Refused('DPoP', 'invalid_dpop_proof', `expected one DPoP header, got ${proofs.length}`);
        record.jkt = await verifyProof(req, proofs[0], token, payload);
      } else if (payload.cnf?.jkt) {
        throw new Refused('Bearer', 'invalid_token', 'DPoP-bound access token presented as Bearer');
      }
      const body = {
        method: req.method,
        path: url.pathname,
        scheme,
        sub: payload.sub,
        client_id: payload.client_id,
        scope: payload.scope,
        token_jti: payload.jti,
        exp: payload.exp,
        jkt: record.jkt,
      };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    } catch (err) {
      if (!(err instanceof Refused)) throw err;
      record.error = err.message;
      // RFC 6750 §3: error_description holds no double quote or backslash.
      const description = err.message.replace(/["\\]/g, "'");
      const params = err.error ? `error="${err.error}", error_description="${description}"` : 'realm="api"';
      const challenge = err.scheme === 'DPoP'
        ? `DPoP ${params}, algs="ES256 RS256 PS256 EdDSA"`
        : `Bearer ${params}`;
      res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json', ...err.extra })
        .end(JSON.stringify({ error: err.error ?? 'unauthorized', error_description: err.message }));
    }
  }

  function test(req, res, path) {
    const json = (value) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(value));
    if (req.method === 'GET' && path === '/_test/requests') return json(requests);
    if (req.method === 'GET' && path === '/_test/grants') return json(grants);
    if (req.method === 'POST' && path === '/_test/rs-nonce') {
      rsNonce = crypto.randomBytes(16).toString('base64url');
      return json({ ok: true });
    }
    return res.writeHead(404).end();
  }

  return { handle, test };
}

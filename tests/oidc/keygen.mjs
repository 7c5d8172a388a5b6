// A signing key pair for tests: the private key as PEM (for authproxy's
// config) and the public JWK (for a client's `jwks` at the provider).
//
//   node keygen.mjs rsa|ec [pkcs8|pkcs1|sec1] [kid]
//
// prints {"private_pem": "...", "public_jwk": {...}} on stdout.
// rsa: 2048-bit; ec: P-256. pkcs1 is RSA-only, sec1 EC-only.
import * as crypto from 'node:crypto';

const [kind, format = 'pkcs8', kid] = process.argv.slice(2);
const { privateKey, publicKey } = kind === 'rsa'
  ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
  : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = publicKey.export({ format: 'jwk' });
if (kid) jwk.kid = kid;
const pem = privateKey.export({ type: format, format: 'pem' });
process.stdout.write(`${JSON.stringify({ private_pem: pem, public_jwk: jwk })}\n`);

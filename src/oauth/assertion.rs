//! RFC 7523 assertions: the JWT a client authenticates with
//! (`client_secret_jwt`, `private_key_jwt`, §2.2) and the JWT that is the
//! grant itself (`urn:ietf:params:oauth:grant-type:jwt-bearer`, §2.1;
//! Google service accounts, Salesforce). A new one, with a new `jti`, for
//! every request sent.

use serde_json::{json, Map, Value};

use super::jwt::{random_jti, Signer};
use crate::secret::Secret;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `grant_type` of the JWT-bearer grant (RFC 7523 §2.1).
pub const JWT_BEARER_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Seconds from `iat` to `exp`. An assertion is used at once, by one
/// request; a short life leaves little to whoever might copy it, and
/// servers cap it anyway (Google at 1 h, the spec's contract at 5 min).
pub const ASSERTION_LIFETIME: u64 = 60;

/// The JOSE header of every assertion: `alg` and `kid` come from the signer.
fn header() -> Map<String, Value> {
    let mut header = Map::new();
    header.insert("typ".into(), "JWT".into());
    header
}

/// A client assertion (RFC 7523 §3): `iss` = `sub` = the client id, `aud`
/// = the token endpoint (or what the provider names instead), a fresh
/// `jti`, `iat` = `now`, `exp` = `now` + [`ASSERTION_LIFETIME`].
pub fn client_assertion(signer: &Signer, client_id: &Secret, audience: &str, now: u64) -> Secret {
    let claims = json!({
        "iss": client_id.expose(),
        "sub": client_id.expose(),
        "aud": audience,
        "jti": random_jti(),
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    });
    signer.sign(header(), &claims)
}

/// What the JWT-bearer grant's assertion is made of (RFC 7523 §2.1, §3).
#[derive(Debug, Clone, PartialEq)]
pub struct GrantAssertion {
    pub signer: Signer,
    /// `iss`: the client id, or a service account's e-mail address.
    pub issuer: Secret,
    /// `sub`: whom the token acts for; left out when not set (Google:
    /// the service account itself).
    pub subject: Option<Secret>,
    /// The `scope` claim (Google wants the scopes here, not in the body).
    pub scope: Option<String>,
}

impl GrantAssertion {
    /// A new assertion for the token endpoint `audience` at `now`.
    pub fn sign(&self, audience: &str, now: u64) -> Secret {
        let mut claims = json!({
            "iss": self.issuer.expose(),
            "aud": audience,
            "jti": random_jti(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        if let Some(sub) = &self.subject {
            claims["sub"] = sub.expose().into();
        }
        if let Some(scope) = &self.scope {
            claims["scope"] = scope.as_str().into();
        }
        self.signer.sign(header(), &claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::jwt::decode_unverified;

    #[test]
    fn client_assertions_have_the_rfc_7523_claims_and_a_new_jti_each() {
        let signer = Signer::hmac(&Secret::new("shh"), None);
        let id = Secret::new("app-1");
        let a = client_assertion(&signer, &id, "https://as.example/token", 1000);
        let b = client_assertion(&signer, &id, "https://as.example/token", 1000);
        let (header, claims) = decode_unverified(a.expose()).unwrap();
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(claims["iss"], "app-1");
        assert_eq!(claims["sub"], "app-1");
        assert_eq!(claims["aud"], "https://as.example/token");
        assert_eq!(claims["iat"], 1000);
        assert_eq!(claims["exp"], 1000 + ASSERTION_LIFETIME);
        let (_, other) = decode_unverified(b.expose()).unwrap();
        assert_ne!(claims["jti"], other["jti"]);
    }

    #[test]
    fn grant_assertions_carry_sub_and_scope_only_when_set() {
        let mut grant = GrantAssertion {
            signer: Signer::hmac(&Secret::new("k"), Some("kid-1".into())),
            issuer: Secret::new("sa@project.iam.example"),
            subject: None,
            scope: None,
        };
        let (header, claims) =
            decode_unverified(grant.sign("https://t.example/token", 5).expose()).unwrap();
        assert_eq!(header["kid"], "kid-1");
        assert_eq!(claims["iss"], "sa@project.iam.example");
        assert!(claims.get("sub").is_none() && claims.get("scope").is_none());
        grant.subject = Some(Secret::new("user@example.test"));
        grant.scope = Some("a b".into());
        let (_, claims) = decode_unverified(grant.sign("aud", 5).expose()).unwrap();
        assert_eq!(claims["sub"], "user@example.test");
        assert_eq!(claims["scope"], "a b");
        assert_eq!(claims["exp"], 5 + ASSERTION_LIFETIME);
    }
}

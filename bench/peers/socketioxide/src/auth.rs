//! Access tokens and passwords the way civicpulse has them: HS256 JWTs with
//! the same claims (so tokens minted by civicpulse or the load generator
//! verify here), and Argon2id with the argon2 crate's defaults.

use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

const ACCESS_TYP: &str = "access";
/// Seconds a token is still accepted after its `exp` (civicpulse's leeway).
const LEEWAY_SECS: u64 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub role: String,
    pub city: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub typ: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Keys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn issue(&self, user_id: &str, name: &str, role: &str, city: Option<&str>) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            name: name.to_owned(),
            role: role.to_owned(),
            city: city.map(str::to_owned),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            typ: ACCESS_TYP.to_owned(),
            sid: None,
        };
        // HS256 signing of a serialisable struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// Signature, algorithm, expiry and token type.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        (data.claims.typ == ACCESS_TYP).then_some(data.claims)
    }
}

/// Argon2id, 19 MiB, 2 passes (the crate's defaults, as civicpulse). Slow
/// on purpose: call from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(b"civicpulse-benchmark-secret-0123456789abcdef", Duration::from_secs(60))
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let token = keys().issue("usr_1", "Ada", "citizen", Some("loadtown"));
        let claims = keys().verify(&token).expect("valid");
        assert_eq!((claims.sub.as_str(), claims.name.as_str()), ("usr_1", "Ada"));
        assert_eq!(claims.city.as_deref(), Some("loadtown"));
        assert_eq!(claims.typ, "access");
    }

    #[test]
    fn other_secrets_types_and_expired_tokens_are_refused() {
        let other =
            Keys::new(b"another-secret", Duration::from_secs(60)).issue("usr_1", "A", "citizen", None);
        assert_eq!(keys().verify(&other), None);
        assert_eq!(keys().verify("not.a.token"), None);
        let now = chrono::Utc::now().timestamp();
        let sign = |typ: &str, exp: i64| {
            let claims = Claims {
                sub: "usr_1".into(),
                name: "A".into(),
                role: "citizen".into(),
                city: None,
                iat: now - 100,
                exp,
                typ: typ.into(),
                sid: Some("ses_1".into()),
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys().encoding).unwrap()
        };
        assert_eq!(keys().verify(&sign("refresh", now + 60)), None);
        assert_eq!(keys().verify(&sign("access", now - 60)), None);
        // civicpulse's tokens carry a session id: still an access token.
        assert!(keys().verify(&sign("access", now + 60)).is_some());
    }

    #[test]
    fn passwords_hash_as_argon2id() {
        assert!(hash_password("bench-password-1").unwrap().starts_with("$argon2id$"));
    }
}

//! Access tokens: HS256 JWTs whose claims carry everything a request or a
//! socket needs about its user, so verifying one never touches the database.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Role;

pub const ACCESS_TYP: &str = "access";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub role: Role,
    pub city: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub typ: String,
    /// The sign-in this token belongs to (see `revocations`); none for
    /// tokens made by the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid access token")]
pub struct InvalidToken;

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = Self::LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn issue(
        &self,
        user_id: &str,
        name: &str,
        role: Role,
        city: Option<&str>,
        session: Option<&str>,
    ) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            name: name.to_string(),
            role,
            city: city.map(str::to_string),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            typ: ACCESS_TYP.to_string(),
            sid: session.map(str::to_string),
        };
        self.sign(&claims)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs arbitrary claims; `issue` is the normal path, this one lets
    /// tests and the load generator make tokens of their own.
    pub fn sign(&self, claims: &Claims) -> String {
        // HS256 signing of a serialisable struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }

    /// Seconds a token is still accepted after its `exp`, for clocks that
    /// differ between the nodes that issue and check it.
    pub const LEEWAY_SECS: u64 = 5;

    /// Checks signature, algorithm, expiry and token type (not whether it
    /// was revoked: see `Domain::verify_access`).
    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| InvalidToken)?;
        if data.claims.typ != ACCESS_TYP {
            return Err(InvalidToken);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&[7u8; 32], Duration::from_secs(60))
    }

    #[test]
    fn issued_tokens_verify() {
        let k = keys();
        let t =
            k.issue("usr_01HN5K7ZQ4X9J8W2V3B6C1D0EF", "Priya", Role::Citizen, Some("bangalore"), Some("s1"));
        let c = k.verify(&t).unwrap();
        assert_eq!(c.name, "Priya");
        assert_eq!(c.city.as_deref(), Some("bangalore"));
        assert_eq!(c.exp - c.iat, 60);
        assert_eq!(c.sid.as_deref(), Some("s1"));
    }

    #[test]
    fn forged_expired_and_wrong_type_tokens_fail() {
        let k = keys();
        let other = TokenKeys::new(&[8u8; 32], Duration::from_secs(60));
        let t = other.issue("usr_x", "X", Role::Admin, None, None);
        assert_eq!(k.verify(&t), Err(InvalidToken));

        let now = chrono::Utc::now().timestamp();
        let mut claims = Claims {
            sub: "usr_x".into(),
            name: "X".into(),
            role: Role::Citizen,
            city: None,
            iat: now - 100,
            exp: now - 60,
            typ: ACCESS_TYP.into(),
            sid: None,
        };
        assert_eq!(k.verify(&k.sign(&claims)), Err(InvalidToken), "expired");
        claims.exp = now + 60;
        claims.typ = "refresh".into();
        assert_eq!(k.verify(&k.sign(&claims)), Err(InvalidToken), "wrong typ");

        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims { typ: ACCESS_TYP.into(), ..claims },
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .unwrap();
        assert_eq!(k.verify(&hs512), Err(InvalidToken), "other algorithm");
        assert_eq!(k.verify("not.a.jwt"), Err(InvalidToken));
    }
}

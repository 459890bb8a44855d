//! JWT verification: the ready-made authentication hook ([`Jwt::into_auth`]) and the verifier of
//! subscription tokens.
//!
//! A [`Jwt`] holds the keys a node trusts — HMAC secrets, RSA and EC public keys, JWKS URLs, any
//! mix of them — and the claims it insists on (issuer, audience). The rules, and why:
//!
//! - **The key decides the algorithm, never the token.** A token's header names its algorithm,
//!   and the header is written by whoever made the token. A token is only tried against keys
//!   whose family its `alg` belongs to: HMAC secrets verify HS256/384/512, RSA keys RS*/PS*, EC
//!   keys ES256 (P-256) or ES384 (P-384). So `alg: none` is refused, and so is the classic
//!   *algorithm confusion* attack: an HS256 token "signed" with the RSA public key's bytes as the
//!   HMAC secret (the public key is public, so anyone could make one) is never checked with the
//!   RSA key's bytes as a secret — with no HMAC secret configured it is refused as "algorithm
//!   HS256 not accepted", and with one it fails as a bad signature.
//! - **Expired is not invalid.** A token whose `exp` has passed is [`Refusal::Expired`] (close
//!   4005: get a new token and reconnect); every other failure is [`Refusal::InvalidToken`]
//!   (close 4500: do not retry with the same token), with a short reason for the logs and the
//!   client. A key server that cannot be asked is [`Refusal::Unavailable`]: not the token's fault.
//! - **Expiry is enforced later, too.** `verify` checks `exp` once, at the handshake (or
//!   `refresh`); the identity carries it (`Identity::expires_at`), and the session's deadline
//!   timer (`expiry.rs`) closes the connection when it passes without a refresh. `exp` is
//!   optional: a token without it never expires. `leeway` (default 0) allows for clock skew in
//!   both `exp` and `nbf`.
//! - **Claims are checked by the node, not guessed.** `sub` is the user id (a string; absent is
//!   the anonymous user `""`); `info`, if present, must be a JSON object (presence shows it to
//!   others); `iss` and `aud` are checked only when configured; `nbf` in the future is "not yet
//!   valid". A subscription token ([`Jwt::verify_subscription`]) must name the connection's user
//!   in `sub` and the channel in `channel`, and must expire; the audience setting does not apply
//!   to it (its audience is the channel).
//! - **Token input never panics.** Tokens are attacker input: a token longer than
//!   [`MAX_TOKEN_LEN`] is refused unread, and every parse step returns a refusal.

use super::jwks::{Jwks, Key, HMAC_ALGORITHMS, JWKS_ALGORITHMS, RSA_ALGORITHMS};
use super::{unix_now, Auth, AuthRequest, Identity, Refusal};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::FutureExt;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The longest token read (a JWT with a large `info` is a few KiB).
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// JWT verification: the keys a node trusts and the claims it requires.
///
/// ```
/// use switchboard::Jwt;
/// # fn main() -> Result<(), switchboard::JwtError> {
/// # let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/rsa_public.pem")).unwrap();
/// let jwt = Jwt::hmac("a long random secret")
///     .with_rsa_pem(&pem)?
///     .issuer("https://auth.example.com")
///     .audience("chat")
///     .leeway(5);
/// let auth = jwt.into_auth();
/// # let _ = auth;
/// # Ok(())
/// # }
/// ```
///
/// Clones share the cached JWKS keys.
#[derive(Clone)]
pub struct Jwt {
    keys: Vec<Key>,
    jwks: Vec<Arc<Jwks>>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
    timeout: Duration,
}

/// A key that cannot be used: what is wrong with it, and what to give instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The PEM holds a private key; a verifier needs only the public one.
    #[error("this PEM holds a private key: give the {0} public key instead (openssl pkey -in KEY.pem -pubout)")]
    PrivateKey(&'static str),
    /// Not an RSA public key in PEM.
    #[error(
        "not an RSA public key in PEM (expected \"-----BEGIN PUBLIC KEY-----\" or \
         \"-----BEGIN RSA PUBLIC KEY-----\"): {0}"
    )]
    NotRsa(String),
    /// Not an EC public key on P-256 or P-384 in PEM.
    #[error(
        "not an EC public key on P-256 or P-384 in PEM (expected \"-----BEGIN PUBLIC KEY-----\", \
         e.g. from openssl ecparam -name prime256v1): {0}"
    )]
    NotEc(String),
}

/// The claims of a verified token.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Claims {
    /// `sub`: the user id, `""` when absent.
    pub sub: String,
    /// `exp`, seconds since the Unix epoch.
    pub exp: Option<u64>,
    /// `iat`, seconds since the Unix epoch.
    pub iat: Option<u64>,
    /// `info`: a JSON object.
    pub info: Option<Value>,
    /// `channel`: the channel a subscription token is for.
    pub channel: Option<String>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |algorithm: Algorithm| {
            self.keys
                .iter()
                .filter(|key| key.algorithms.contains(&algorithm))
                .count()
        };
        f.debug_struct("Jwt")
            .field("hmac_secrets", &count(Algorithm::HS256))
            .field("rsa_keys", &count(Algorithm::RS256))
            .field("ec_keys", &(count(Algorithm::ES256) + count(Algorithm::ES384)))
            .field("jwks", &self.jwks.iter().map(|jwks| jwks.url()).collect::<Vec<_>>())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Jwt {
    pub(crate) fn empty() -> Self {
        Self {
            keys: Vec::new(),
            jwks: Vec::new(),
            audience: None,
            issuer: None,
            leeway: 0,
            timeout: super::BACKEND_TIMEOUT,
        }
    }

    /// Tokens signed with the HMAC `secret` (HS256, HS384, HS512). An empty secret verifies
    /// nothing (it would let anyone sign).
    pub fn hmac(secret: impl AsRef<[u8]>) -> Self {
        Self::empty().with_hmac(secret)
    }

    /// Tokens signed with the RSA key whose public half is `public_key_pem` (RS256/384/512,
    /// PS256/384/512).
    pub fn rsa_pem(public_key_pem: &[u8]) -> Result<Self, JwtError> {
        Self::empty().with_rsa_pem(public_key_pem)
    }

    /// Tokens signed with the EC key whose public half is `public_key_pem`: ES256 for a P-256
    /// key (ES384 for a P-384 one).
    pub fn ec_pem(public_key_pem: &[u8]) -> Result<Self, JwtError> {
        Self::empty().with_ec_pem(public_key_pem)
    }

    /// Tokens signed with a key of the JWK set at `url` (an `http://` URL), chosen by the
    /// token's `kid`. The set is fetched on first use and cached; a token naming a key the set
    /// lacks makes it fetched again (at most once per 10 s for one unknown `kid`), and so does
    /// its age (5 minutes). RSA and EC keys are used.
    pub fn jwks(url: impl Into<String>) -> Self {
        Self::empty().with_jwks(url)
    }

    /// Also accepts tokens signed with the HMAC `secret`.
    pub fn with_hmac(mut self, secret: impl AsRef<[u8]>) -> Self {
        match DecodingKey::from_secret(secret.as_ref()) {
            Ok(key) => self.keys.push(Key {
                kid: None,
                algorithms: HMAC_ALGORITHMS.to_vec(),
                key,
            }),
            Err(_) => tracing::error!("JWT: an empty HMAC secret was given; it verifies no token"),
        }
        self
    }

    /// Also accepts tokens signed with this RSA key (its public half in PEM).
    pub fn with_rsa_pem(mut self, public_key_pem: &[u8]) -> Result<Self, JwtError> {
        refuse_private(public_key_pem, "RSA")?;
        let key = DecodingKey::from_rsa_pem(public_key_pem).map_err(|err| JwtError::NotRsa(err.to_string()))?;
        // Parses the key itself (`from_rsa_pem` only reads the PEM around it).
        Jwk::from_decoding_key(&key, None).map_err(|err| JwtError::NotRsa(err.to_string()))?;
        self.keys.push(Key {
            kid: None,
            algorithms: RSA_ALGORITHMS.to_vec(),
            key,
        });
        Ok(self)
    }

    /// Also accepts tokens signed with this EC key (its public half in PEM).
    pub fn with_ec_pem(mut self, public_key_pem: &[u8]) -> Result<Self, JwtError> {
        refuse_private(public_key_pem, "EC")?;
        let key = DecodingKey::from_ec_pem(public_key_pem).map_err(|err| JwtError::NotEc(err.to_string()))?;
        let algorithm = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Algorithm::ES256,
            Ok(97) => Algorithm::ES384,
            _ => return Err(JwtError::NotEc("a curve other than P-256 or P-384".into())),
        };
        // Parses the point: a verifier cannot be made from a point that is not on the curve.
        match jsonwebtoken::crypto::verify("", b"", &key, algorithm) {
            Ok(_) => {}
            Err(err) => return Err(JwtError::NotEc(err.to_string())),
        }
        self.keys.push(Key {
            kid: None,
            algorithms: vec![algorithm],
            key,
        });
        Ok(self)
    }

    /// Also accepts tokens signed with a key of the JWK set at `url` (see [`jwks`](Self::jwks)).
    pub fn with_jwks(mut self, url: impl Into<String>) -> Self {
        self.jwks.push(Arc::new(Jwks::new(url.into())));
        self
    }

    /// Connection tokens must name `aud` in their `aud` claim (a string, or an array holding
    /// it). Unset (the default), `aud` is not checked.
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = Some(aud.into());
        self
    }

    /// Tokens must carry `iss` as their `iss` claim. Unset (the default), `iss` is not checked.
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = Some(iss.into());
        self
    }

    /// Seconds of clock skew allowed in `exp` and `nbf` (default 0).
    pub fn leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    /// How long a JWKS URL has to answer (default 2 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Authentication by this verifier: every connection must present a token (`?token=` or a
    /// `connect` message's `token`); its `sub` is the user, its `info` the identity's info, its
    /// `exp` the identity's expiry. Subscription tokens are verified with the same keys.
    pub fn into_auth(self) -> Auth {
        let jwt = Arc::new(self);
        let verifier = Arc::clone(&jwt);
        Auth {
            hook: Arc::new(move |request: AuthRequest| {
                let jwt = Arc::clone(&verifier);
                async move {
                    let Some(token) = request.token else {
                        return Err(Refusal::InvalidToken(
                            "no token: send ?token=JWT or {\"type\":\"connect\",\"token\":…}".into(),
                        ));
                    };
                    let claims = jwt.verify(&token).await?;
                    let mut identity = Identity::user(claims.sub);
                    if let Some(info) = claims.info {
                        identity = identity.with_info(info);
                    }
                    if let Some(exp) = claims.exp {
                        identity = identity.expires_at(exp);
                    }
                    Ok(identity)
                }
                .boxed()
            }),
            required: true,
            subscription_tokens: Some(jwt),
        }
    }

    /// Verifies a connection token: signature, then claims (see the module doc).
    pub(crate) async fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let payload = self.verified_payload(token).await?;
        self.claims(&payload, self.audience.as_deref(), unix_now())
    }

    /// Verifies a subscription token of user `user` for `channel`: the same keys and issuer, no
    /// audience; `sub` must be `user`, `channel` must be `channel`, and `exp` must be there.
    pub(crate) async fn verify_subscription(&self, token: &str, user: &str, channel: &str) -> Result<(), Refusal> {
        let payload = self.verified_payload(token).await?;
        let claims = self.claims(&payload, None, unix_now())?;
        if claims.exp.is_none() {
            return Err(invalid("subscription token without exp"));
        }
        if claims.sub != user {
            return Err(invalid("subscription token of another user"));
        }
        if claims.channel.as_deref() != Some(channel) {
            return Err(invalid("subscription token for another channel"));
        }
        Ok(())
    }

    /// True if some configured key may verify `alg`.
    fn accepts(&self, alg: Algorithm) -> bool {
        self.keys.iter().any(|key| key.algorithms.contains(&alg))
            || (!self.jwks.is_empty() && JWKS_ALGORITHMS.contains(&alg))
    }

    /// The payload of `token` once a key of its algorithm's family has verified its signature.
    async fn verified_payload(&self, token: &str) -> Result<Map<String, Value>, Refusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too long"));
        }
        let (alg, kid) = read_header(token)?;
        if !self.accepts(alg) {
            return Err(invalid(format!("algorithm {alg:?} not accepted")));
        }
        // Claims are checked by `claims`, so that the reasons are ours.
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;

        let mut failure = None;
        for key in self.keys.iter().filter(|key| key.algorithms.contains(&alg)) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(err) => failure = Some(err),
            }
        }
        if JWKS_ALGORITHMS.contains(&alg) {
            for jwks in &self.jwks {
                for key in jwks.keys_for(kid.as_deref(), alg, self.timeout).await? {
                    match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                        Ok(data) => return Ok(data.claims),
                        Err(err) => failure = Some(err),
                    }
                }
            }
        }
        Err(match failure {
            Some(err) => invalid(reason(err.kind())),
            None => match kid {
                Some(kid) => invalid(format!("unknown key id {:?}", shorten(&kid))),
                None => invalid(format!("no key for algorithm {alg:?}")),
            },
        })
    }

    /// The claims of a verified payload, checked: formats, issuer, `audience` (if given), `nbf`,
    /// then `exp` (last, so that a token that would stay invalid is not reported as expired).
    fn claims(&self, payload: &Map<String, Value>, audience: Option<&str>, now: u64) -> Result<Claims, Refusal> {
        let exp = numeric(payload, "exp")?;
        let nbf = numeric(payload, "nbf")?;
        let iat = numeric(payload, "iat")?;
        let sub = match payload.get("sub") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(sub)) => sub.clone(),
            Some(_) => return Err(invalid("sub is not a string")),
        };
        let info = match payload.get("info") {
            None | Some(Value::Null) => None,
            Some(info @ Value::Object(_)) => Some(info.clone()),
            Some(_) => return Err(invalid("info is not a JSON object")),
        };
        let channel = match payload.get("channel") {
            None | Some(Value::Null) => None,
            Some(Value::String(channel)) => Some(channel.clone()),
            Some(_) => return Err(invalid("channel is not a string")),
        };
        if let Some(issuer) = &self.issuer {
            if payload.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(invalid("wrong issuer"));
            }
        }
        if let Some(audience) = audience {
            let named = match payload.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
                _ => false,
            };
            if !named {
                return Err(invalid("wrong audience"));
            }
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(invalid("not yet valid"));
        }
        if exp.is_some_and(|exp| exp.saturating_add(self.leeway) <= now) {
            return Err(Refusal::Expired);
        }
        Ok(Claims {
            sub,
            exp,
            iat,
            info,
            channel,
        })
    }
}

fn invalid(reason: impl Into<String>) -> Refusal {
    Refusal::InvalidToken(reason.into())
}

/// At most 64 characters of attacker-chosen text, for a refusal's reason.
fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

/// A PEM that holds a private key is refused: the verifier needs the public one, and a private
/// key handed around as configuration is a leak waiting to happen.
fn refuse_private(pem: &[u8], kind: &'static str) -> Result<(), JwtError> {
    if pem.windows(b"PRIVATE KEY".len()).any(|window| window == b"PRIVATE KEY") {
        return Err(JwtError::PrivateKey(kind));
    }
    Ok(())
}

/// The header's `alg` and `kid`, read before any key is chosen.
fn read_header(token: &str) -> Result<(Algorithm, Option<String>), Refusal> {
    let malformed = || invalid("malformed token");
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed())?;
    let header: Map<String, Value> = serde_json::from_slice(&header).map_err(|_| malformed())?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        _ => return Err(malformed()),
    };
    let alg = Algorithm::from_str(alg).map_err(|_| {
        // Only letters and digits of an attacker-chosen name go into the reason.
        let name: String = alg.chars().filter(char::is_ascii_alphanumeric).take(16).collect();
        invalid(format!("algorithm {name} not accepted").replace("  ", " "))
    })?;
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(malformed()),
    };
    Ok((alg, kid))
}

/// A NumericDate claim (RFC 7519): seconds since the epoch, possibly fractional; negative is 0.
fn numeric(payload: &Map<String, Value>, name: &str) -> Result<Option<u64>, Refusal> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => Ok(Some(match number.as_u64() {
            Some(secs) => secs,
            // Saturating casts: fractional seconds are floored, negative is 0, huge is u64::MAX.
            None => number.as_f64().map_or(0, |secs| secs as u64),
        })),
        Some(_) => Err(invalid(format!("{name} is not a number"))),
    }
}

/// A short reason for a failed `jsonwebtoken::decode`.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            "no usable key for this token"
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "algorithm not accepted"
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => "malformed token",
        _ => "invalid token",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwks;
    use axum::extract::State;
    use axum::routing::get;
    use axum::Router;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECRET: &[u8] = b"a test secret that is long enough";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).expect("sign")
    }

    fn hmac_key() -> EncodingKey {
        EncodingKey::from_secret(SECRET).expect("secret")
    }

    fn rsa_key(name: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(&fixture(name)).expect("RSA private key")
    }

    fn ec_key() -> EncodingKey {
        EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("EC private key")
    }

    fn in_an_hour() -> u64 {
        unix_now() + 3600
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn invalid_reason(result: Result<Claims, Refusal>) -> String {
        match result {
            Err(Refusal::InvalidToken(reason)) => reason,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn hmac_tokens_of_every_size_verify() {
        let jwt = Jwt::hmac(SECRET);
        let exp = in_an_hour();
        let claims =
            json!({"sub": "42", "exp": exp, "iat": 1_700_000_000u64, "info": {"name": "Ann"}, "channel": "room"});
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let verified = jwt.verify(&sign(alg, &hmac_key(), None, &claims)).await;
            assert_eq!(
                verified,
                Ok(Claims {
                    sub: "42".into(),
                    exp: Some(exp),
                    iat: Some(1_700_000_000),
                    info: Some(json!({"name": "Ann"})),
                    channel: Some("room".into()),
                }),
                "{alg:?}"
            );
        }
    }

    #[tokio::test]
    async fn rs256_token_verifies() {
        let jwt = Jwt::rsa_pem(&fixture("rsa_public.pem")).expect("RSA public key");
        for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
            let token = sign(
                alg,
                &rsa_key("rsa_private.pem"),
                None,
                &json!({"sub": "7", "exp": in_an_hour()}),
            );
            assert_eq!(
                jwt.verify(&token).await.map(|claims| claims.sub),
                Ok("7".into()),
                "{alg:?}"
            );
        }
    }

    #[tokio::test]
    async fn es256_token_verifies() {
        let jwt = Jwt::ec_pem(&fixture("ec_public.pem")).expect("EC public key");
        let token = sign(Algorithm::ES256, &ec_key(), None, &json!({"sub": "9"}));
        assert_eq!(jwt.verify(&token).await.map(|claims| claims.sub), Ok("9".into()));
    }

    #[tokio::test]
    async fn several_key_kinds_at_once() {
        let jwt = Jwt::hmac(SECRET)
            .with_rsa_pem(&fixture("rsa_public.pem"))
            .and_then(|jwt| jwt.with_ec_pem(&fixture("ec_public.pem")))
            .expect("keys");
        let claims = json!({"sub": "1"});
        for token in [
            sign(Algorithm::HS256, &hmac_key(), None, &claims),
            sign(Algorithm::RS256, &rsa_key("rsa_private.pem"), None, &claims),
            sign(Algorithm::ES256, &ec_key(), None, &claims),
        ] {
            assert!(jwt.verify(&token).await.is_ok());
        }
        let other_rsa = sign(Algorithm::RS256, &rsa_key("rsa2_private.pem"), None, &claims);
        assert_eq!(invalid_reason(jwt.verify(&other_rsa).await), "bad signature");
    }

    #[tokio::test]
    async fn expired_token_is_expired_and_leeway_allows_skew() {
        let token = sign(
            Algorithm::HS256,
            &hmac_key(),
            None,
            &json!({"sub": "1", "exp": unix_now() - 5}),
        );
        assert_eq!(Jwt::hmac(SECRET).verify(&token).await, Err(Refusal::Expired));
        assert!(Jwt::hmac(SECRET).leeway(60).verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn token_without_exp_or_sub_is_anonymous_and_never_expires() {
        let token = sign(Algorithm::HS256, &hmac_key(), None, &json!({}));
        assert_eq!(Jwt::hmac(SECRET).verify(&token).await, Ok(Claims::default()));
    }

    #[tokio::test]
    async fn not_yet_valid_token_is_invalid() {
        let token = sign(Algorithm::HS256, &hmac_key(), None, &json!({"nbf": unix_now() + 600}));
        assert_eq!(invalid_reason(Jwt::hmac(SECRET).verify(&token).await), "not yet valid");
        let token = sign(Algorithm::HS256, &hmac_key(), None, &json!({"nbf": unix_now() - 1}));
        assert!(Jwt::hmac(SECRET).verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn wrong_key_is_a_bad_signature() {
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another").expect("secret"),
            None,
            &json!({}),
        );
        assert_eq!(invalid_reason(Jwt::hmac(SECRET).verify(&token).await), "bad signature");
        let token = sign(Algorithm::ES256, &ec_key(), None, &json!({}));
        let jwt = Jwt::rsa_pem(&fixture("rsa_public.pem")).expect("RSA public key");
        assert_eq!(invalid_reason(jwt.verify(&token).await), "algorithm ES256 not accepted");
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let header = b64(&json!({"alg": "none", "typ": "JWT"}));
        let payload = b64(&json!({"sub": "admin"}));
        let jwt = Jwt::hmac(SECRET)
            .with_rsa_pem(&fixture("rsa_public.pem"))
            .expect("RSA public key");
        for token in [format!("{header}.{payload}."), format!("{header}.{payload}.c2ln")] {
            assert_eq!(invalid_reason(jwt.verify(&token).await), "algorithm none not accepted");
        }
        let header = b64(&json!({"alg": "None"}));
        assert!(matches!(
            jwt.verify(&format!("{header}.{payload}.")).await,
            Err(Refusal::InvalidToken(_))
        ));
    }

    #[tokio::test]
    async fn hs256_signed_with_the_rsa_public_key_is_refused() {
        let public = fixture("rsa_public.pem");
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&public).expect("secret"),
            None,
            &json!({"sub": "admin"}),
        );
        // RSA key only: no HMAC algorithm is accepted at all.
        let jwt = Jwt::rsa_pem(&public).expect("RSA public key");
        assert_eq!(
            invalid_reason(jwt.verify(&forged).await),
            "algorithm HS256 not accepted"
        );
        // RSA key and an HMAC secret: the token is checked with the secret only, and fails.
        let jwt = Jwt::hmac(SECRET).with_rsa_pem(&public).expect("RSA public key");
        assert_eq!(invalid_reason(jwt.verify(&forged).await), "bad signature");
        // A JWKS-only verifier accepts no HMAC either (and does not even fetch).
        let jwt = Jwt::jwks("http://127.0.0.1:9/never-asked");
        assert_eq!(
            invalid_reason(jwt.verify(&forged).await),
            "algorithm HS256 not accepted"
        );
    }

    #[tokio::test]
    async fn malformed_tokens_are_invalid() {
        let jwt = Jwt::hmac(SECRET);
        let good = sign(Algorithm::HS256, &hmac_key(), None, &json!({}));
        let (head, _) = good.rsplit_once('.').expect("three parts");
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        for token in [
            "",
            "a.b",
            "a.b.c",
            "...",
            "not a token at all",
            "eyJhbGciOiJIUzI1NiJ9.%%%.sig",
            &format!("{head}.!!!"),
            &format!("{good}.extra"),
            &long,
        ] {
            assert!(
                matches!(jwt.verify(token).await, Err(Refusal::InvalidToken(_))),
                "{token:?}"
            );
        }
        // A payload that is not an object, correctly signed.
        let header = b64(&json!({"alg": "HS256"}));
        let payload = URL_SAFE_NO_PAD.encode("[1,2]");
        let signature =
            jsonwebtoken::crypto::sign(format!("{header}.{payload}").as_bytes(), &hmac_key(), Algorithm::HS256)
                .expect("sign");
        let token = format!("{header}.{payload}.{signature}");
        assert_eq!(invalid_reason(jwt.verify(&token).await), "malformed token");
    }

    #[tokio::test]
    async fn claim_formats_are_checked() {
        let jwt = Jwt::hmac(SECRET);
        for (claims, reason) in [
            (json!({"info": "text"}), "info is not a JSON object"),
            (json!({"info": [1]}), "info is not a JSON object"),
            (json!({"sub": 42}), "sub is not a string"),
            (json!({"exp": "tomorrow"}), "exp is not a number"),
            (json!({"channel": 1}), "channel is not a string"),
        ] {
            let token = sign(Algorithm::HS256, &hmac_key(), None, &claims);
            assert_eq!(invalid_reason(jwt.verify(&token).await), reason, "{claims}");
        }
    }

    #[tokio::test]
    async fn issuer_and_audience() {
        let jwt = Jwt::hmac(SECRET).issuer("auth").audience("chat");
        let token = |claims: Value| sign(Algorithm::HS256, &hmac_key(), None, &claims);
        assert!(jwt.verify(&token(json!({"iss": "auth", "aud": "chat"}))).await.is_ok());
        assert!(jwt
            .verify(&token(json!({"iss": "auth", "aud": ["x", "chat"]})))
            .await
            .is_ok());
        assert_eq!(
            invalid_reason(jwt.verify(&token(json!({"iss": "auth"}))).await),
            "wrong audience"
        );
        assert_eq!(
            invalid_reason(jwt.verify(&token(json!({"iss": "auth", "aud": "x"}))).await),
            "wrong audience"
        );
        assert_eq!(
            invalid_reason(jwt.verify(&token(json!({"iss": "evil", "aud": "chat"}))).await),
            "wrong issuer"
        );
        assert_eq!(
            invalid_reason(jwt.verify(&token(json!({"aud": "chat"}))).await),
            "wrong issuer"
        );
        // Without an audience setting, `aud` is not checked.
        assert!(Jwt::hmac(SECRET)
            .verify(&token(json!({"aud": "anything"})))
            .await
            .is_ok());
    }

    #[test]
    fn bad_key_files_say_what_to_fix() {
        assert!(matches!(
            Jwt::rsa_pem(&fixture("rsa_private.pem")),
            Err(JwtError::PrivateKey("RSA"))
        ));
        assert!(matches!(
            Jwt::ec_pem(&fixture("ec_private.pem")),
            Err(JwtError::PrivateKey("EC"))
        ));
        assert!(matches!(
            Jwt::rsa_pem(&fixture("ec_public.pem")),
            Err(JwtError::NotRsa(_))
        ));
        assert!(matches!(
            Jwt::ec_pem(&fixture("rsa_public.pem")),
            Err(JwtError::NotEc(_))
        ));
        assert!(matches!(Jwt::rsa_pem(b"garbage"), Err(JwtError::NotRsa(_))));
        let message = Jwt::rsa_pem(&fixture("rsa_private.pem"))
            .expect_err("private")
            .to_string();
        assert!(message.contains("-pubout"), "{message}");
    }

    #[tokio::test]
    async fn empty_hmac_secret_verifies_nothing() {
        let token = "eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo";
        assert!(matches!(
            Jwt::hmac("").verify(token).await,
            Err(Refusal::InvalidToken(_))
        ));
    }

    #[tokio::test]
    async fn into_auth_makes_the_identity() {
        let auth = Jwt::hmac(SECRET).into_auth();
        assert!(auth.required && auth.subscription_tokens.is_some());
        let request = |token: Option<String>| AuthRequest {
            client: "c1".into(),
            handshake: crate::ws::Handshake {
                uri: http::Uri::from_static("/ws"),
                headers: http::HeaderMap::new(),
                peer: None,
            },
            token,
            data: None,
            refresh: false,
        };
        match auth.authenticate(request(None)).await {
            Err(Refusal::InvalidToken(reason)) => assert!(reason.starts_with("no token"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let exp = in_an_hour();
        let token = sign(
            Algorithm::HS256,
            &hmac_key(),
            None,
            &json!({"sub": "42", "exp": exp, "info": {"a": 1}}),
        );
        let identity = auth.authenticate(request(Some(token))).await;
        assert_eq!(
            identity,
            Ok(Identity::user("42").with_info(json!({"a": 1})).expires_at(exp))
        );
        let token = sign(
            Algorithm::HS256,
            &hmac_key(),
            None,
            &json!({"sub": "42", "exp": unix_now() - 1}),
        );
        assert_eq!(auth.authenticate(request(Some(token))).await, Err(Refusal::Expired));
    }

    #[tokio::test]
    async fn auth_takes_a_subscription_verifier() {
        let auth = crate::Auth::new(|_: AuthRequest| async { Ok(Identity::anonymous()) })
            .subscription_tokens(Jwt::hmac(SECRET));
        assert!(auth.subscription_tokens.is_some());
    }

    #[tokio::test]
    async fn subscription_tokens() {
        // The audience setting does not apply to subscription tokens.
        let jwt = Jwt::hmac(SECRET).audience("chat");
        let token = |claims: Value| sign(Algorithm::HS256, &hmac_key(), None, &claims);
        let exp = in_an_hour();
        let good = token(json!({"sub": "42", "channel": "room", "exp": exp}));
        assert_eq!(jwt.verify_subscription(&good, "42", "room").await, Ok(()));
        let refused = |result: Result<(), Refusal>| match result {
            Err(Refusal::InvalidToken(reason)) => reason,
            other => panic!("expected InvalidToken, got {other:?}"),
        };
        assert_eq!(
            refused(jwt.verify_subscription(&good, "43", "room").await),
            "subscription token of another user"
        );
        assert_eq!(
            refused(jwt.verify_subscription(&good, "42", "hall").await),
            "subscription token for another channel"
        );
        let no_exp = token(json!({"sub": "42", "channel": "room"}));
        assert_eq!(
            refused(jwt.verify_subscription(&no_exp, "42", "room").await),
            "subscription token without exp"
        );
        let no_channel = token(json!({"sub": "42", "exp": exp}));
        assert_eq!(
            refused(jwt.verify_subscription(&no_channel, "42", "room").await),
            "subscription token for another channel"
        );
        let expired = token(json!({"sub": "42", "channel": "room", "exp": unix_now() - 1}));
        assert_eq!(
            jwt.verify_subscription(&expired, "42", "room").await,
            Err(Refusal::Expired)
        );
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"x").expect("secret"),
            None,
            &json!({"sub": "42", "channel": "room", "exp": exp}),
        );
        assert_eq!(
            refused(jwt.verify_subscription(&forged, "42", "room").await),
            "bad signature"
        );
    }

    /// A JWKS server on 127.0.0.1: serves whatever `set` holds and counts requests.
    struct KeyServer {
        url: String,
        set: Arc<parking_lot::Mutex<Value>>,
        requests: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl KeyServer {
        async fn start(set: Value) -> Self {
            type Shared = (Arc<parking_lot::Mutex<Value>>, Arc<AtomicUsize>);
            let set = Arc::new(parking_lot::Mutex::new(set));
            let requests = Arc::new(AtomicUsize::new(0));
            let app = Router::new()
                .route(
                    "/jwks",
                    get(|State((set, requests)): State<Shared>| async move {
                        requests.fetch_add(1, Ordering::SeqCst);
                        let body = set.lock().to_string();
                        ([(http::header::CONTENT_TYPE, "application/json")], body)
                    }),
                )
                .with_state((Arc::clone(&set), Arc::clone(&requests)));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}/jwks", listener.local_addr().expect("address"));
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Self {
                url,
                set,
                requests,
                task,
            }
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    impl Drop for KeyServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn rsa_jwk(public: &str, kid: &str) -> Value {
        let key = DecodingKey::from_rsa_pem(&fixture(public)).expect("RSA public key");
        let mut jwk = Jwk::from_decoding_key(&key, Some(Algorithm::RS256)).expect("JWK");
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).expect("JSON")
    }

    fn ec_jwk(kid: &str) -> Value {
        let key = DecodingKey::from_ec_pem(&fixture("ec_public.pem")).expect("EC public key");
        let mut jwk = Jwk::from_decoding_key(&key, None).expect("JWK");
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).expect("JSON")
    }

    #[tokio::test]
    async fn jwks_key_verifies_and_is_cached() {
        let server = KeyServer::start(
            json!({"keys": [rsa_jwk("rsa_public.pem", "k1"), ec_jwk("e1"), {"kty": "oct", "k": "c2VjcmV0"}]}),
        )
        .await;
        let jwt = Jwt::jwks(&server.url);
        assert_eq!(server.requests(), 0, "fetched lazily");
        let token = sign(
            Algorithm::RS256,
            &rsa_key("rsa_private.pem"),
            Some("k1"),
            &json!({"sub": "5"}),
        );
        assert_eq!(jwt.verify(&token).await.map(|claims| claims.sub), Ok("5".into()));
        let token = sign(Algorithm::ES256, &ec_key(), Some("e1"), &json!({"sub": "6"}));
        assert_eq!(
            jwt.clone().verify(&token).await.map(|claims| claims.sub),
            Ok("6".into())
        );
        // No kid: every key of the algorithm is tried.
        let token = sign(
            Algorithm::RS256,
            &rsa_key("rsa_private.pem"),
            None,
            &json!({"sub": "7"}),
        );
        assert!(jwt.verify(&token).await.is_ok());
        assert_eq!(server.requests(), 1, "one fetch, then the cache");
        // The key named k1 does not verify another key's signature.
        let token = sign(Algorithm::RS256, &rsa_key("rsa2_private.pem"), Some("k1"), &json!({}));
        assert_eq!(invalid_reason(jwt.verify(&token).await), "bad signature");
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn jwks_new_kid_triggers_one_refetch() {
        let server = KeyServer::start(json!({"keys": [rsa_jwk("rsa_public.pem", "k1")]})).await;
        let jwt = Jwt::jwks(&server.url);
        let old = sign(Algorithm::RS256, &rsa_key("rsa_private.pem"), Some("k1"), &json!({}));
        assert!(jwt.verify(&old).await.is_ok());
        assert_eq!(server.requests(), 1);

        // The provider rotates: k2 replaces k1.
        *server.set.lock() = json!({"keys": [rsa_jwk("rsa2_public.pem", "k2")]});
        let new = sign(
            Algorithm::RS256,
            &rsa_key("rsa2_private.pem"),
            Some("k2"),
            &json!({"sub": "8"}),
        );
        assert_eq!(jwt.verify(&new).await.map(|claims| claims.sub), Ok("8".into()));
        assert_eq!(server.requests(), 2, "one refetch for the new kid");
        assert!(jwt.verify(&new).await.is_ok());
        assert_eq!(server.requests(), 2);

        // An unknown kid: one refetch, then refused without asking again within 10 s.
        let unknown = sign(Algorithm::RS256, &rsa_key("rsa2_private.pem"), Some("k3"), &json!({}));
        assert_eq!(invalid_reason(jwt.verify(&unknown).await), "unknown key id \"k3\"");
        assert_eq!(server.requests(), 3);
        for _ in 0..5 {
            assert_eq!(invalid_reason(jwt.verify(&unknown).await), "unknown key id \"k3\"");
        }
        assert_eq!(server.requests(), 3, "at most one refetch per unknown kid per 10 s");
        // The withdrawn k1 is gone after the refetch.
        assert_eq!(invalid_reason(jwt.verify(&old).await), "unknown key id \"k1\"");
    }

    #[tokio::test]
    async fn jwks_many_unknown_kids_are_capped() {
        let server = KeyServer::start(json!({"keys": []})).await;
        let jwt = Jwt::jwks(&server.url);
        for n in 0..(jwks::MAX_UNKNOWN + 10) {
            let token = sign(
                Algorithm::RS256,
                &rsa_key("rsa_private.pem"),
                Some(&format!("made-up-{n}")),
                &json!({}),
            );
            assert!(matches!(jwt.verify(&token).await, Err(Refusal::InvalidToken(_))));
        }
        // The first fetch, then one per distinct unknown kid up to the cap (the first kid's
        // fetch is the first fetch itself).
        assert_eq!(server.requests(), jwks::MAX_UNKNOWN + 1);
    }

    #[tokio::test]
    async fn jwks_down_or_garbage_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let token = sign(Algorithm::RS256, &rsa_key("rsa_private.pem"), Some("k1"), &json!({}));
        let jwt = Jwt::jwks(format!("http://{address}/jwks")).timeout(Duration::from_millis(500));
        assert!(matches!(jwt.verify(&token).await, Err(Refusal::Unavailable(_))));

        for garbage in [json!({"no": "keys"}), json!([1, 2]), json!({"keys": "none"})] {
            let server = KeyServer::start(garbage.clone()).await;
            match Jwt::jwks(&server.url).verify(&token).await {
                Err(Refusal::Unavailable(text)) => assert!(text.contains("not a JWK set"), "{text}"),
                other => panic!("{garbage}: {other:?}"),
            }
        }
        let jwt = Jwt::jwks("https://example.invalid/jwks");
        assert!(matches!(jwt.verify(&token).await, Err(Refusal::Unavailable(_))));
    }

    #[tokio::test]
    async fn static_keys_and_jwks_together() {
        let server = KeyServer::start(json!({"keys": [rsa_jwk("rsa2_public.pem", "k2")]})).await;
        let jwt = Jwt::hmac(SECRET)
            .with_rsa_pem(&fixture("rsa_public.pem"))
            .expect("RSA")
            .with_jwks(&server.url);
        let hs = sign(Algorithm::HS256, &hmac_key(), None, &json!({}));
        let rs = sign(Algorithm::RS256, &rsa_key("rsa_private.pem"), None, &json!({}));
        assert!(jwt.verify(&hs).await.is_ok());
        assert!(jwt.verify(&rs).await.is_ok());
        assert_eq!(server.requests(), 0, "static keys first");
        let rs2 = sign(Algorithm::RS256, &rsa_key("rsa2_private.pem"), Some("k2"), &json!({}));
        assert!(jwt.verify(&rs2).await.is_ok());
        assert_eq!(server.requests(), 1);
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_verify(token in ".{0,200}") {
            let jwt = Jwt::hmac(SECRET);
            let verified = jwt.verify(&token).now_or_never().expect("no JWKS: completes at once");
            prop_assert!(matches!(verified, Err(Refusal::InvalidToken(_))));
        }

        #[test]
        fn jwt_shaped_strings_never_verify(
            header in prop_oneof![Just(b64(&json!({"alg": "HS256"}))), Just(b64(&json!({"alg": "none"}))), "[A-Za-z0-9_-]{0,40}"],
            payload in "[A-Za-z0-9_-]{0,80}",
            signature in "[A-Za-z0-9_-]{0,60}",
        ) {
            let jwt = Jwt::hmac(SECRET);
            let token = format!("{header}.{payload}.{signature}");
            let verified = jwt.verify(&token).now_or_never().expect("no JWKS: completes at once");
            prop_assert!(matches!(verified, Err(Refusal::InvalidToken(_))));
        }
    }
}

//! A JWKS URL's key set (RFC 7517): fetched on first use, cached, fetched again when a token
//! names a key id (`kid`) the cached set does not have — the identity provider has rotated its
//! keys — and every [`MAX_AGE`] so that a key the provider withdrew stops verifying.
//!
//! A token is attacker input, and so is its `kid`: an unknown `kid` costs at most one fetch per
//! [`REFETCH_INTERVAL`] (and at most [`MAX_UNKNOWN`] distinct unknown ids in that time), so that a
//! flood of made-up ids cannot turn the node into a load generator against the key server. One
//! fetch runs at a time; tokens that arrive meanwhile wait for it and use its answer. After a
//! failed fetch the key server is left alone for [`RETRY_AFTER_FAILURE`]: tokens that need it are
//! refused as unavailable at once, and a set that is only due for its periodic refresh keeps being
//! used as it was (availability over freshness, for a key server that is briefly down).
//!
//! Only public keys that sign are kept: RSA (RS256/384/512, PS256/384/512) and EC on P-256 (ES256)
//! or P-384 (ES384); a key's `alg`, when given, narrows it to that one algorithm. Symmetric (`oct`)
//! keys, encryption keys (`"use":"enc"`) and keys of other types are skipped.

use super::{Backend, Refusal};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// At most one fetch per this interval for one unknown `kid`.
pub(crate) const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// At most this many distinct unknown `kid`s cause a fetch within [`REFETCH_INTERVAL`].
pub(crate) const MAX_UNKNOWN: usize = 16;
/// A cached set older than this is fetched again on next use.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(300);
/// After a failed fetch, the key server is not asked again for this long.
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The algorithms an RSA public key verifies.
pub(crate) const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
/// The algorithms an HMAC secret verifies.
pub(crate) const HMAC_ALGORITHMS: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
/// The algorithms a key from a JWKS may verify.
pub(crate) const JWKS_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// One verification key: what it verifies, and the key id that names it (JWKS keys).
#[derive(Clone)]
pub(crate) struct Key {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl Key {
    fn fits(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg) && kid.is_none_or(|kid| self.kid.as_deref() == Some(kid))
    }
}

/// The key set of one JWKS URL, shared by every clone of the [`Jwt`](super::Jwt) that names it.
pub(crate) struct Jwks {
    url: String,
    backend: OnceLock<Backend>,
    state: parking_lot::Mutex<State>,
    /// Held while fetching: one fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    keys: Arc<Vec<Key>>,
    fetched_at: Option<Instant>,
    /// Counts successful fetches, so that a task that waited for a fetch knows one happened.
    generation: u64,
    /// The last failed fetch: when, and why.
    failed: Option<(Instant, String)>,
    /// Unknown key ids (`""` for a token without one) and when a fetch was last made for each.
    unknown: HashMap<String, Instant>,
}

/// Why a fetch is made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Nothing cached yet.
    First,
    /// The cached set is older than [`MAX_AGE`].
    Stale,
    /// The token names a key the cached set does not have.
    Unknown,
}

impl State {
    fn matching(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Key> {
        self.keys.iter().filter(|key| key.fits(kid, alg)).cloned().collect()
    }

    fn is_fresh(&self) -> bool {
        self.fetched_at.is_some_and(|at| at.elapsed() < MAX_AGE)
    }

    fn recently_failed(&self) -> Option<String> {
        match &self.failed {
            Some((at, why)) if at.elapsed() < RETRY_AFTER_FAILURE => Some(why.clone()),
            _ => None,
        }
    }

    /// True (and remembered) when a token naming the unknown `kid` may cause a fetch now.
    fn may_fetch_for(&mut self, kid: Option<&str>) -> bool {
        let kid = kid.unwrap_or_default();
        self.unknown.retain(|_, at| at.elapsed() < REFETCH_INTERVAL);
        if self.unknown.contains_key(kid) || self.unknown.len() >= MAX_UNKNOWN {
            return false;
        }
        self.unknown.insert(kid.to_owned(), Instant::now());
        true
    }
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .field("keys", &state.keys.len())
            .field("fetched", &state.fetched_at.is_some())
            .finish()
    }
}

impl Jwks {
    pub fn new(url: String) -> Self {
        Self {
            url,
            backend: OnceLock::new(),
            state: parking_lot::Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The keys that may verify a token of algorithm `alg` naming key `kid`: the cached set's,
    /// after a fetch if the set is not there yet, is old, or lacks such a key (within the limits
    /// the module doc gives). Empty when no such key exists; `Unavailable` when the key server
    /// could not be asked.
    pub async fn keys_for(&self, kid: Option<&str>, alg: Algorithm, timeout: Duration) -> Result<Vec<Key>, Refusal> {
        let seen = {
            let state = self.state.lock();
            if state.is_fresh() {
                let found = state.matching(kid, alg);
                if !found.is_empty() {
                    return Ok(found);
                }
            }
            state.generation
        };
        let _fetching = self.fetching.lock().await;
        let why = {
            let mut state = self.state.lock();
            let refetched = state.generation != seen;
            if refetched || state.is_fresh() {
                // Fetched while this task waited, or fresh but without the key.
                let found = state.matching(kid, alg);
                if !found.is_empty() || refetched || !state.may_fetch_for(kid) {
                    return Ok(found);
                }
                Why::Unknown
            } else if state.fetched_at.is_some() {
                Why::Stale
            } else {
                Why::First
            }
        };
        let recently_failed = self.state.lock().recently_failed();
        if let Some(why_failed) = recently_failed {
            return self.after_failure(why, why_failed, kid, alg);
        }
        let fetched = self.fetch(timeout).await;
        match fetched {
            Ok(keys) => {
                let mut state = self.state.lock();
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
                state.generation += 1;
                state.failed = None;
                Ok(state.matching(kid, alg))
            }
            Err(why_failed) => {
                tracing::warn!(url = %self.url, error = %why_failed, "JWKS fetch failed");
                self.state.lock().failed = Some((Instant::now(), why_failed.clone()));
                self.after_failure(why, why_failed, kid, alg)
            }
        }
    }

    /// What a token gets when the key server cannot be asked: the old set if it was only due
    /// for its periodic refresh, else `Unavailable`.
    fn after_failure(&self, why: Why, failure: String, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Key>, Refusal> {
        if why == Why::Stale {
            let found = self.state.lock().matching(kid, alg);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Err(Refusal::Unavailable(format!("JWKS {failure}")))
    }

    async fn fetch(&self, timeout: Duration) -> Result<Vec<Key>, String> {
        let backend = self.backend.get_or_init(Backend::new);
        let answer = backend
            .get_json(&self.url, timeout)
            .await
            .map_err(|err| err.to_string())?;
        parse_set(&answer).ok_or_else(|| format!("{}: not a JWK set (no \"keys\" array)", self.url))
    }
}

/// The usable keys of a JWK set; `None` if `set` is not one.
pub(crate) fn parse_set(set: &Value) -> Option<Vec<Key>> {
    let keys = set.get("keys")?.as_array()?;
    Some(keys.iter().filter_map(parse_key).collect())
}

/// One JWK as a verification key, if it is a public signing key of a kind this node verifies.
fn parse_key(value: &Value) -> Option<Key> {
    let jwk: Jwk = match serde_json::from_value(value.clone()) {
        Ok(jwk) => jwk,
        Err(err) => {
            tracing::debug!(error = %err, "JWKS: skipping a key that is not a JWK");
            return None;
        }
    };
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let mut algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        _ => return None,
    };
    if let Some(alg) = &jwk.common.key_algorithm {
        let alg = Algorithm::from_str(&alg.to_string()).ok()?;
        if !algorithms.contains(&alg) {
            return None;
        }
        algorithms = vec![alg];
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id,
        algorithms,
        key,
    })
}

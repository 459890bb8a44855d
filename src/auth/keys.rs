//! `JwtKeys`: where a node's token keys come from, as a configuration says it — a secret, key
//! files, a JWKS URL — turned into one [`Jwt`] that accepts tokens signed with any of them.
//! `switchboard serve` (`[auth]` and its flags) and the `auth` example read their settings into
//! it.

use super::Jwt;
use std::path::PathBuf;

/// The keys that verify tokens; any combination.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct JwtKeys {
    /// HS256/HS384/HS512 with this secret.
    pub hmac_secret: Option<String>,
    /// RS256 (RS384, RS512, PS*) with the RSA public key in this PEM file.
    pub rsa_public_key: Option<PathBuf>,
    /// ES256 with the P-256 public key in this PEM file.
    pub ec_public_key: Option<PathBuf>,
    /// The keys of this JWK set (`http://` URL).
    pub jwks_url: Option<String>,
}

impl JwtKeys {
    /// True when no key is given.
    pub fn is_empty(&self) -> bool {
        self.hmac_secret.is_none()
            && self.rsa_public_key.is_none()
            && self.ec_public_key.is_none()
            && self.jwks_url.is_none()
    }

    /// The verifier of these keys (`None` when none is given), or what is wrong with a key file.
    pub fn load(&self) -> Result<Option<Jwt>, String> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut jwt = Jwt::empty();
        if let Some(secret) = &self.hmac_secret {
            jwt = jwt.with_hmac(secret);
        }
        if let Some(path) = &self.rsa_public_key {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read key {}: {e}", path.display()))?;
            jwt = jwt.with_rsa_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if let Some(path) = &self.ec_public_key {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read key {}: {e}", path.display()))?;
            jwt = jwt.with_ec_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if let Some(url) = &self.jwks_url {
            jwt = jwt.with_jwks(url.clone());
        }
        Ok(Some(jwt))
    }
}

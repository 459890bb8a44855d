//! PLACEHOLDER (identity branch only): replaced by the JWT verifier.
use super::Refusal;

/// JWT verification (placeholder).
#[derive(Debug)]
pub struct Jwt;

/// The claims of a verified token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims {
    pub sub: String,
    pub exp: Option<u64>,
    pub info: Option<serde_json::Value>,
    pub channel: Option<String>,
}

impl Jwt {
    pub(crate) async fn verify(&self, _token: &str) -> Result<Claims, Refusal> {
        Err(Refusal::InvalidToken("placeholder".into()))
    }
    pub(crate) async fn verify_subscription(&self, _token: &str, _user: &str, _channel: &str) -> Result<(), Refusal> {
        Err(Refusal::InvalidToken("placeholder".into()))
    }
}

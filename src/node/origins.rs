//! Which web pages may open WebSocket connections to a node: the `Origin` header of the
//! handshake, checked against [`Origins`].
//!
//! Browsers send cookies with a WebSocket handshake whatever page opens it, and the same-origin
//! policy does not apply to WebSockets: without this check any site a user visits could open a
//! connection in their name ("cross-site WebSocket hijacking"). Clients other than browsers send
//! no `Origin` (or whatever they like): the check is about browsers, and a request without the
//! header is allowed.

use crate::ws::{Handshake, Rejection};
use http::{header, StatusCode};

/// The web origins allowed to open WebSocket connections
/// ([`NodeBuilder::allowed_origins`](super::NodeBuilder::allowed_origins)).
///
/// A handshake without an `Origin` header (a client that is not a browser) is always allowed;
/// one from an origin not allowed gets 403 with a body naming the origin and the setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origins {
    rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Rule {
    #[default]
    SameHost,
    Any,
    List(Vec<Pattern>),
}

/// One entry of [`Origins::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// None: any scheme (an entry written without one).
    scheme: Option<String>,
    host: HostPattern,
    /// None: the scheme's default port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`; any subdomain, not the domain itself.
    Subdomains(String),
    /// `*`: any host.
    Any,
}

/// An origin (or a `Host`), lowercased, its port made explicit where the scheme has a default.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origins {
    /// The default: the origin's host name must be the one the request was made to (its
    /// `Host` header, or `X-Forwarded-Host` as set by a reverse proxy); ports are not compared
    /// and the loopback names (`localhost`, `127.0.0.0/8`, `::1`) are one host. A page of the
    /// node's own host may connect (a dev server on another port included); another site may not.
    pub fn same_host() -> Self {
        Self { rule: Rule::SameHost }
    }

    /// Any origin (for a public API meant to be used from any site, with no cookies to steal).
    pub fn any() -> Self {
        Self { rule: Rule::Any }
    }

    /// These origins only: each `scheme://host[:port]` (e.g. `https://app.example.com`,
    /// `http://localhost:5173`), matched exactly on scheme, host and port (the scheme's default
    /// port when none is written), case-insensitively. `https://*.example.com` allows every
    /// subdomain of `example.com` (not `example.com` itself); `*` allows any origin; an entry
    /// without a scheme (`app.example.com`) allows that host over any scheme.
    ///
    /// An entry that does not parse allows nothing (and is logged as a warning).
    pub fn list<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns = Vec::new();
        for entry in origins {
            let entry = entry.as_ref().trim();
            if entry == "*" {
                return Self::any();
            }
            match Pattern::parse(entry) {
                Some(pattern) => patterns.push(pattern),
                None => tracing::warn!(
                    origin = entry,
                    "allowed origin '{entry}' is not scheme://host[:port]: ignored"
                ),
            }
        }
        Self {
            rule: Rule::List(patterns),
        }
    }

    /// Allows the handshake, or refuses it with 403 and a body that names the origin and the
    /// setting to change.
    pub(crate) fn check(&self, handshake: &Handshake) -> Result<(), Rejection> {
        let Some(value) = handshake.headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(value.as_bytes());
        let text = text.trim();
        let origin = parse_origin(text);
        let allowed = match &self.rule {
            Rule::Any => true,
            Rule::SameHost => origin.as_ref().is_some_and(|origin| same_host(origin, handshake)),
            Rule::List(patterns) => origin
                .as_ref()
                .is_some_and(|origin| patterns.iter().any(|pattern| pattern.matches(origin))),
        };
        if allowed {
            return Ok(());
        }
        let why = match &self.rule {
            Rule::SameHost => match request_host(handshake) {
                Some(host) => format!(" (only pages of the host the request was made to, '{host}', are by default)"),
                None => " (only pages of the host the request was made to are by default, and the request names none)"
                    .to_owned(),
            },
            _ => String::new(),
        };
        Err(Rejection::new(
            StatusCode::FORBIDDEN,
            format!(
                "403 Forbidden: origin '{text}' is not allowed{why}; add it with --allowed-origin {text} \
                 (NodeBuilder::allowed_origins)\n"
            ),
        ))
    }
}

impl Pattern {
    fn parse(entry: &str) -> Option<Self> {
        let lower = entry.trim_end_matches('/').to_ascii_lowercase();
        let (scheme, rest) = match lower.split_once("://") {
            Some((scheme, rest)) if !scheme.is_empty() => (Some(scheme.to_owned()), rest),
            Some(_) => return None,
            None => (None, lower.as_str()),
        };
        let (host, port) = split_host_port(rest)?;
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return None;
            }
            HostPattern::Subdomains(format!(".{domain}"))
        } else if host.contains('*') {
            return None;
        } else {
            HostPattern::Exact(host.to_owned())
        };
        Some(Self { scheme, host, port })
    }

    fn matches(&self, origin: &Origin) -> bool {
        if self.scheme.as_deref().is_some_and(|scheme| *scheme != origin.scheme) {
            return false;
        }
        let port = self.port.or_else(|| default_port(&origin.scheme));
        if port != origin.port {
            return false;
        }
        match &self.host {
            HostPattern::Exact(host) => *host == origin.host,
            HostPattern::Subdomains(suffix) => {
                origin.host.len() > suffix.len() && origin.host.ends_with(suffix.as_str())
            }
            HostPattern::Any => true,
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `scheme://host[:port]`, as browsers send it (`null` and anything else: None).
fn parse_origin(text: &str) -> Option<Origin> {
    let lower = text.trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    if scheme.is_empty() || rest.contains(['/', '?', '#', '@', '*']) {
        return None;
    }
    let (host, port) = split_host_port(rest)?;
    // Other schemes than http(s) and ws(s) (an extension's page, say) have no default port.
    let port = port.or_else(|| default_port(scheme));
    Some(Origin {
        scheme: scheme.to_owned(),
        host: host.to_owned(),
        port,
    })
}

/// `host[:port]` (an IPv6 host in brackets). None if the port is not a number.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if text.is_empty() {
        return None;
    }
    if text.starts_with('[') {
        let end = text.find(']')?;
        let (host, rest) = text.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match text.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Some((text, None)),
        Some((host, port)) if !host.is_empty() => Some((host, Some(port.parse().ok()?))),
        Some(_) => None,
        None => Some((text, None)),
    }
}

/// The host the request was made to: `X-Forwarded-Host` (a reverse proxy's), else `Host`, else
/// the request target's authority.
fn request_host(handshake: &Handshake) -> Option<String> {
    let forwarded = handshake
        .headers
        .get("x-forwarded-host")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let host = handshake.headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = handshake.uri.authority().map(|a| a.as_str());
    forwarded
        .or(host)
        .or(authority)
        .map(|host| host.trim().to_ascii_lowercase())
}

/// Whether the origin is the host (with the port, the origin scheme's default when the host has
/// none) that the request was made to: its `Host` or its `X-Forwarded-Host`.
/// The page's own host: the origin's host name is the one the request was made to. Ports are
/// not compared (a dev server on :5173 talking to the node on :8000 is the same site), and the
/// loopback names (`localhost`, `127.0.0.0/8`, `::1`) are one host.
fn same_host(origin: &Origin, handshake: &Handshake) -> bool {
    let matches = |host: &str| {
        let host = host.trim().to_ascii_lowercase();
        split_host_port(&host)
            .is_some_and(|(host, _port)| host == origin.host || (is_loopback(host) && is_loopback(&origin.host)))
    };
    let forwarded = handshake
        .headers
        .get_all("x-forwarded-host")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(matches);
    let host = handshake.headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let host = host.or_else(|| handshake.uri.authority().map(|a| a.as_str()));
    forwarded || host.is_some_and(matches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, Uri};

    fn handshake(origin: Option<&str>, host: Option<&str>) -> Handshake {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        Handshake {
            uri: Uri::from_static("/ws"),
            headers,
            peer: None,
        }
    }

    fn allows(origins: &Origins, origin: &str, host: &str) -> bool {
        origins.check(&handshake(Some(origin), Some(host))).is_ok()
    }

    #[test]
    fn no_origin_is_allowed_by_every_rule() {
        for origins in [
            Origins::same_host(),
            Origins::any(),
            Origins::list(["https://a.example"]),
        ] {
            assert!(origins.check(&handshake(None, Some("example.com"))).is_ok());
            assert!(origins.check(&handshake(None, None)).is_ok());
        }
    }

    #[test]
    fn same_host_is_the_default() {
        assert_eq!(Origins::default(), Origins::same_host());
        let o = Origins::default();
        assert!(allows(&o, "https://chat.example.com", "chat.example.com"));
        assert!(allows(&o, "https://Chat.Example.com", "chat.example.COM"));
        assert!(allows(&o, "https://chat.example.com", "chat.example.com:443"));
        assert!(allows(&o, "http://localhost:8000", "localhost:8000"));
        assert!(allows(&o, "http://[::1]:8000", "[::1]:8000"));
        // Ports are not compared (a dev server on another port is the same site), and the
        // loopback names are one host.
        assert!(allows(&o, "http://localhost:5173", "localhost:8000"));
        assert!(allows(&o, "http://127.0.0.1:5173", "localhost:8000"));
        assert!(allows(&o, "http://[::1]:5173", "127.0.0.1:8000"));
        assert!(allows(&o, "http://chat.example.com", "chat.example.com:443"));
        assert!(!allows(&o, "https://evil.example", "chat.example.com"));
        assert!(!allows(&o, "https://chat.example.com.evil.example", "chat.example.com"));
        assert!(!allows(&o, "http://page.test:5173", "127.0.0.1:8000"));
        assert!(!allows(&o, "null", "chat.example.com"));
        // No host to compare with: refused.
        assert!(o.check(&handshake(Some("https://chat.example.com"), None)).is_err());
    }

    #[test]
    fn same_host_behind_a_proxy() {
        let mut h = handshake(Some("https://chat.example.com"), Some("127.0.0.1:8000"));
        assert!(Origins::same_host().check(&h).is_err());
        h.headers
            .insert("x-forwarded-host", HeaderValue::from_static("chat.example.com"));
        assert!(Origins::same_host().check(&h).is_ok());
    }

    #[test]
    fn any_allows_everything() {
        assert!(allows(&Origins::any(), "https://evil.example", "chat.example.com"));
        assert!(allows(&Origins::any(), "null", "chat.example.com"));
        assert_eq!(Origins::list(["https://a.example", "*"]), Origins::any());
    }

    #[test]
    fn a_list_matches_scheme_host_and_port() {
        let o = Origins::list([
            "https://app.example.com",
            "https://*.example.com",
            "http://localhost:5173",
        ]);
        let host = "api.example.net";
        assert!(allows(&o, "https://app.example.com", host));
        assert!(allows(&o, "HTTPS://APP.EXAMPLE.COM", host));
        assert!(allows(&o, "https://app.example.com:443", host));
        assert!(allows(&o, "https://other.example.com", host));
        assert!(allows(&o, "https://a.b.example.com", host));
        assert!(allows(&o, "http://localhost:5173", host));
        assert!(!allows(&o, "https://example.com", host), "*. is subdomains only");
        assert!(!allows(&o, "https://evilexample.com", host));
        assert!(!allows(&o, "https://example.com.evil.net", host));
        assert!(!allows(&o, "http://app.example.com", host), "scheme");
        assert!(!allows(&o, "https://app.example.com:8443", host), "port");
        assert!(!allows(&o, "http://localhost:5174", host));
        assert!(!allows(&o, "http://localhost", host));
        assert!(!allows(&o, "null", host));
        // The node's own host is not implied by a list.
        assert!(!allows(&o, "https://api.example.net", host));
    }

    #[test]
    fn list_entries_without_scheme_or_with_a_trailing_slash() {
        let o = Origins::list(["app.example.com", "https://b.example.com/", "not a url:x", "https://*"]);
        assert!(allows(&o, "https://app.example.com", "h"));
        assert!(allows(&o, "http://app.example.com", "h"));
        assert!(!allows(&o, "http://app.example.com:8080", "h"));
        assert!(allows(&o, "https://b.example.com", "h"));
        assert!(allows(&o, "https://anything.test", "h"), "https://* is any https host");
        assert!(!allows(&o, "http://anything.test", "h"));
    }

    #[test]
    fn a_refusal_names_the_origin_and_the_setting() {
        let refusal = Origins::list(["https://app.example.com"])
            .check(&handshake(Some("https://evil.example"), Some("app.example.com")))
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::FORBIDDEN);
        assert_eq!(
            refusal.body,
            "403 Forbidden: origin 'https://evil.example' is not allowed; add it with --allowed-origin \
             https://evil.example (NodeBuilder::allowed_origins)\n"
        );
        let refusal = Origins::same_host()
            .check(&handshake(Some("http://evil.example:5173"), Some("localhost:8000")))
            .unwrap_err();
        assert!(
            refusal
                .body
                .contains("origin 'http://evil.example:5173' is not allowed"),
            "{}",
            refusal.body
        );
        assert!(refusal.body.contains("'localhost:8000'"), "{}", refusal.body);
        assert!(
            refusal.body.contains("--allowed-origin http://evil.example:5173"),
            "{}",
            refusal.body
        );
    }
}

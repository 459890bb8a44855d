//! Shared helpers for the echo servers and the load client.
use std::net::SocketAddr;

/// Value of `--NAME VALUE` (or `--NAME=VALUE`) in the process arguments.
pub fn arg(name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == flag {
            return args.next();
        }
        if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
    }
    None
}

/// Whether the bare flag `--NAME` is present.
pub fn flag(name: &str) -> bool {
    let flag = format!("--{name}");
    std::env::args().skip(1).any(|a| a == flag)
}

/// `--bind ADDR` (default 127.0.0.1:9001).
pub fn bind_addr() -> SocketAddr {
    arg("bind")
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()
        .expect("--bind must be host:port")
}

/// Bind the listener and announce it on stdout (run.sh waits for this line).
pub async fn listen(name: &str) -> tokio::net::TcpListener {
    let addr = bind_addr();
    let l = tokio::net::TcpListener::bind(addr).await.expect("bind");
    println!("{name} listening on {} pid {}", l.local_addr().unwrap(), std::process::id());
    l
}

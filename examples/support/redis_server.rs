//! A `redis-server` child process on a free loopback port, for the benchmark examples that need
//! one (`bench_redis_fanout`, `bench_recovery`); included with `#[path]`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server; killed when dropped.
pub struct RedisChild(Child);

impl RedisChild {
    /// The process id (for its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `redis-server` without persistence; its URL and the process.
pub async fn start_redis() -> Result<(String, RedisChild), Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start redis-server (install it, or pass --redis URL): {e}"))?;
    let child = RedisChild(child);
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await
        {
            Ok(_) => return Ok((url, child)),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(err) => return Err(format!("redis-server did not start: {err}").into()),
        }
    }
}

//! Echo server on yawc 0.5. Stock configuration (`Options::default()`: no
//! compression, no UTF-8 validation, 1 MiB max payload) unless `--deflate` is
//! given, which turns on permessage-deflate, UTF-8 validation and a 64 MiB
//! payload limit (used for the Autobahn 12.*/13.* run). Server handshake via
//! hyper's upgrade (yawc's only server path).
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use yawc::{frame::OpCode, Options, WebSocket};

fn options() -> Options {
    if ws_crates_bench::flag("deflate") {
        Options::default()
            .with_balanced_compression()
            .with_utf8()
            .with_max_payload_read(64 << 20)
    } else {
        Options::default()
    }
}

async fn upgrade_req(mut req: Request<Incoming>) -> yawc::Result<Response<Empty<Bytes>>> {
    let (response, fut) = WebSocket::upgrade_with_options(&mut req, options())?;
    tokio::spawn(async move {
        let Ok(mut ws) = fut.await else { return };
        while let Some(frame) = ws.next().await {
            match frame.opcode() {
                OpCode::Text | OpCode::Binary => {
                    if ws.send(frame).await.is_err() {
                        break;
                    }
                }
                _ => {}
            }
        }
    });
    Ok(response)
}

#[tokio::main]
async fn main() {
    let listener = ws_crates_bench::listen(if ws_crates_bench::flag("deflate") { "yawc+deflate" } else { "yawc" }).await;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = http1::Builder::new()
                .serve_connection(io, service_fn(upgrade_req))
                .with_upgrades()
                .await;
        });
    }
}

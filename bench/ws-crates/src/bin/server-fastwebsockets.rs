//! Echo server on fastwebsockets 0.10, stock configuration. fastwebsockets has no
//! handshake of its own on the server side: its `upgrade` feature rides on hyper,
//! as in the crate's own echo_server example. The hyper connection task ends once
//! the upgrade completes, leaving one WebSocket task per connection.
use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};

async fn handle_ws(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    // FragmentCollector reassembles fragmented messages (stock usage for messages).
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn upgrade_req(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        let _ = handle_ws(fut).await;
    });
    Ok(response)
}

#[tokio::main]
async fn main() {
    let listener = ws_crates_bench::listen("fastwebsockets").await;
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

//! Echo server on tokio-websockets 0.13, stock configuration: one task per connection.
use futures_util::{SinkExt, StreamExt};
use tokio_websockets::ServerBuilder;

async fn handle(stream: tokio::net::TcpStream) -> Result<(), tokio_websockets::Error> {
    let (_req, mut ws) = ServerBuilder::new().accept(stream).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let listener = ws_crates_bench::listen("tokio-websockets").await;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let _ = handle(stream).await;
        });
    }
}

//! Echo server on tokio-tungstenite 0.30, stock configuration: one task per connection.
use futures_util::{SinkExt, StreamExt};

async fn handle(stream: tokio::net::TcpStream) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
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
    let listener = ws_crates_bench::listen("tokio-tungstenite").await;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let _ = handle(stream).await;
        });
    }
}

//! `switchboard publish CHANNEL 'JSON' --url http://... [--api-key KEY]`

use clap::Args;
use switchboard::Publisher;

#[derive(Args)]
pub struct PublishArgs {
    /// The channel to broadcast on.
    channel: String,
    /// The data: with --api-key any JSON (a namespace channel's data, a typed channel's
    /// parameters); without, the channel's parameters as a JSON object (/_broadcast).
    #[arg(default_value = "{}")]
    params: String,
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Bearer token, for servers started with --broadcast-token.
    #[arg(long, env = "SWITCHBOARD_BROADCAST_TOKEN")]
    token: Option<String>,
    /// Publish through the server HTTP API (POST /api/publish) with this key.
    #[arg(long, env = "SWITCHBOARD_API_KEY")]
    api_key: Option<String>,
}

pub async fn run(args: PublishArgs) -> Result<(), Box<dyn std::error::Error>> {
    let params: serde_json::Value =
        serde_json::from_str(&args.params).map_err(|e| format!("PARAMS is not valid JSON ({e}): {}", args.params))?;
    if !params.is_object() && args.api_key.is_none() {
        return Err(format!("PARAMS must be a JSON object, like '{{\"message\": \"hi\"}}', not {params}").into());
    }
    let mut publisher = Publisher::new(&args.url)?;
    if let Some(token) = args.token {
        publisher = publisher.token(token);
    }
    if let Some(key) = args.api_key {
        publisher = publisher.api_key(key);
    }
    publisher.publish(&args.channel, params).await?;
    println!("published on '{}'", args.channel);
    Ok(())
}

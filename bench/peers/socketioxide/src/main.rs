//! The socketioxide benchmark peer: what a team choosing a Rust Socket.IO
//! server today would write, the way socketioxide's docs show it (axum +
//! socketioxide, sqlx on SQLite), with the routes, events and payloads of
//! civicpulse and the Node peer. With REDIS_URL set, socketioxide-redis
//! joins every process naming the same Redis and REDIS_KEY_PREFIX into one
//! cluster; the processes share one SQLite file (DB_PATH).
//!
//! Environment: JWT_SECRET (required), PORT (3003), HOST (127.0.0.1),
//! DB_PATH, PING_INTERVAL_MS, PING_TIMEOUT_MS, REDIS_URL, REDIS_KEY_PREFIX,
//! NODE_ID; RUST_LOG for the log.

mod auth;
mod payload;
mod realtime;
mod rest;
mod store;

use std::sync::Arc;
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide_redis::drivers::redis::redis_client as redis;
use socketioxide_redis::{RedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

use crate::auth::Keys;
use crate::realtime::Online;
use crate::rest::App;
use crate::store::Db;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env_ms(name: &str, default: u64) -> Result<Duration, Error> {
    match std::env::var(name) {
        Ok(v) => Ok(Duration::from_millis(v.parse().map_err(|_| format!("{name}: not a number: {v}"))?)),
        Err(_) => Ok(Duration::from_millis(default)),
    }
}

/// The socketioxide drivers speak RESP3 (the crate's docs ask for it in the URL).
fn resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let secret = std::env::var("JWT_SECRET").map_err(|_| "JWT_SECRET is required")?;
    let port: u16 = std::env::var("PORT").unwrap_or_else(|_| "3003".into()).parse()?;
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let node_id = std::env::var("NODE_ID").unwrap_or_else(|_| format!("socketioxide-{}", std::process::id()));
    let db_path = std::env::var("DB_PATH").unwrap_or_else(|_| "socketioxide-peer.db".into());
    let db = Arc::new(Db::open(&db_path).await?);
    let keys = Arc::new(Keys::new(secret.as_bytes(), rest::access_ttl()));

    // Same knobs as civicpulse and the Node peer; socketioxide's defaults otherwise.
    let builder = SocketIo::builder()
        .ping_interval(env_ms("PING_INTERVAL_MS", 25_000)?)
        .ping_timeout(env_ms("PING_TIMEOUT_MS", 20_000)?)
        .with_state(db.clone())
        .with_state(keys.clone())
        .with_state(Online::default());

    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    match std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => {
            let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_else(|_| "socket.io".into());
            let client = redis::Client::open(resp3(&url))?;
            let adapter = RedisAdapterCtr::new_with_redis_config(
                &client,
                RedisAdapterConfig::new().with_prefix(prefix.clone()),
            )
            .await?;
            let (layer, io) = builder.with_adapter::<RedisAdapter<_>>(adapter).build_layer();
            io.ns("/", realtime::on_connect.with(realtime::authenticate)).await?;
            log::info!("socketioxide peer {node_id}: redis adapter (prefix {prefix})");
            serve(listener, layer, io, db, keys, &node_id).await
        }
        None => {
            let (layer, io) = builder.build_layer();
            io.ns("/", realtime::on_connect.with(realtime::authenticate));
            serve(listener, layer, io, db, keys, &node_id).await
        }
    }
}

async fn serve<A: Adapter>(
    listener: tokio::net::TcpListener,
    layer: SocketIoLayer<A>,
    io: SocketIo<A>,
    db: Arc<Db>,
    keys: Arc<Keys>,
    node_id: &str,
) -> Result<(), Error> {
    let app = rest::router(App { db, keys, io }).layer(layer);
    log::info!("socketioxide peer {node_id} listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn redis_urls_ask_for_resp3() {
        assert_eq!(super::resp3("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379?protocol=resp3");
        assert_eq!(super::resp3("redis://h/0?x=1"), "redis://h/0?x=1&protocol=resp3");
        assert_eq!(super::resp3("redis://h?protocol=resp2"), "redis://h?protocol=resp2");
    }
}

//! Prints a tenant's events as they arrive, resuming across server restarts.
//!
//! ```sh
//! cargo run -p broker-client --example tail -- http://127.0.0.1:8080 alice 'correct horse' [event ...]
//! ```
//!
//! Without event names it follows every event of the user's tenant (the snapshot first).
//! `BROKER_LAST_EVENT_ID=N` starts after cursor N instead of with the snapshot.

use broker_client::{Client, SubscribeOptions};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: tail <base-url> <username> <password> [event ...]";
    let base = args.next().ok_or(usage)?;
    let username = args.next().ok_or(usage)?;
    let password = args.next().ok_or(usage)?;
    let events: Vec<String> = args.collect();
    let last_event_id = match std::env::var("BROKER_LAST_EVENT_ID") {
        Ok(v) => Some(v.parse()?),
        Err(_) => None,
    };

    let client = Client::new(base)?;
    client.login(&username, &password).await?;
    let mut stream = client.subscribe(SubscribeOptions {
        events,
        last_event_id,
        ..Default::default()
    });
    while let Some(event) = stream.next().await {
        let event = event?;
        println!("{}\t{}\t{}", event.cursor, event.event, event.data);
    }
    Ok(())
}

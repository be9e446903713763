//! Crash loop: 20 times, start the server, drive concurrent inserts, user creations and SSE
//! subscribers, and `kill -9` it at a random moment. Every acknowledged insert survives with
//! its cursor, every acknowledged user exists, cursors never repeat, and the log verifies
//! clean each time.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::json;

const ROUNDS: usize = 20;
const CLIENTS: usize = 6;

/// A pseudo-random number from the clock: enough to vary the kill moment between runs.
fn jitter(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos / 7919) % max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_inserts_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    // cursor → the unique payload that was acknowledged with it.
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut s = Server::start(dir.path(), &[]);
        if round == 0 {
            assert_eq!(create_user(&c, &s, "w", "pw", "crash").await, 200);
        }
        let jwt = login(&c, &s, "w", "pw").await;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let created = Arc::new(Mutex::new(Vec::new()));
        let mut writers = Vec::new();
        {
            let (c, url, created) = (client(), s.url("/create_user"), Arc::clone(&created));
            writers.push(tokio::spawn(async move {
                for n in 0..10_000u32 {
                    let name = format!("c{round}-{n}");
                    let body = json!({"username": name, "password": "pw", "admin_token": ADMIN, "tenant_name": "crash"});
                    if post(&c, url.clone(), body).await.0 != 200 {
                        return;
                    }
                    created.lock().unwrap().push(name);
                }
            }));
        }
        for _ in 0..2 {
            let (base, jwt) = (s.url("/sse"), jwt.clone());
            writers.push(tokio::spawn(async move {
                let Ok(mut resp) = reqwest::Client::new()
                    .get(base)
                    .bearer_auth(&jwt)
                    .send()
                    .await
                else {
                    return;
                };
                while let Ok(Some(_)) = resp.chunk().await {}
            }));
        }
        for client_no in 0..CLIENTS {
            let (c, url, jwt, acked) =
                (client(), s.url("/insert"), jwt.clone(), Arc::clone(&acked));
            writers.push(tokio::spawn(async move {
                for n in 0..100_000u32 {
                    let tag = format!("r{round}-c{client_no}-n{n}");
                    let body = json!({"event": format!("e{client_no}"), "data": tag}).to_string();
                    let (status, reply) =
                        post_raw(&c, url.clone(), body, Some(&format!("Bearer {jwt}"))).await;
                    if status != 200 {
                        return;
                    }
                    acked
                        .lock()
                        .unwrap()
                        .push((reply["cursor"].as_u64().unwrap(), tag));
                }
            }));
        }
        // Kill at a random moment while inserts flow: after the first acknowledgement (a busy
        // machine may take a while to get there), then up to 600 ms more.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no insert was acknowledged within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(jitter(600))).await;
        s.kill();
        for w in writers {
            let _ = tokio::time::timeout(Duration::from_secs(40), w).await;
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(
            !acked.is_empty(),
            "round {round}: no insert was acknowledged"
        );
        eprintln!(
            "round {round}: {} inserts acknowledged before kill -9",
            acked.len()
        );
        for (cursor, tag) in acked {
            let previous = acknowledged.insert(cursor, tag.clone());
            assert!(
                previous.is_none(),
                "cursor {cursor} acknowledged twice ({previous:?} and {tag})"
            );
        }

        // Restart: every acknowledged insert is there, with its cursor.
        let mut s = Server::start(dir.path(), &[]);
        let jwt = login(&c, &s, "w", "pw").await;
        let mut sse = Sse::open(&s, &jwt, Some("0")).await;
        let mut present: BTreeMap<u64, String> = BTreeMap::new();
        let newest = *acknowledged.keys().last().unwrap();
        while present.keys().last().is_none_or(|last| *last < newest) {
            let frame = sse
                .next_event(WAIT)
                .await
                .unwrap_or_else(|| panic!("round {round}: stream stalled before cursor {newest}"));
            present.insert(frame.cursor(), frame.json().as_str().unwrap().to_owned());
        }
        for (cursor, tag) in &acknowledged {
            assert_eq!(
                present.get(cursor),
                Some(tag),
                "round {round}: acknowledged cursor {cursor} lost"
            );
        }
        let unique: HashSet<&String> = present.values().collect();
        assert_eq!(unique.len(), present.len(), "an insert appears twice");
        let (_, users) = post(&c, s.url("/list_users"), json!({"admin_token": ADMIN})).await;
        let names: HashSet<&str> = users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap())
            .collect();
        for name in created.lock().unwrap().iter() {
            assert!(
                names.contains(name.as_str()),
                "round {round}: acknowledged user {name} lost"
            );
        }
        drop(sse);
        assert_eq!(s.terminate(), Some(0));
        let (code, out, _) = run_broker(&["log", "verify", "--db", dir.path().to_str().unwrap()]);
        assert_eq!(code, 0, "round {round}: verify found faults:\n{out}");
        assert!(out.contains(" 0 faults"), "{out}");
    }
}

//! Per-user signals that a user's credentials were invalidated (revoked, password or tenant
//! changed), so that their open SSE streams close at once instead of at the next request.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::log::Cursor;

/// A `watch` of the credential epoch per user with open streams.
#[derive(Default)]
pub struct CredentialWatch {
    // std mutex: held only to find or create one sender.
    by_user: Mutex<HashMap<String, watch::Sender<Cursor>>>,
}

impl CredentialWatch {
    /// A receiver that changes when `username`'s credential epoch moves on from the one
    /// `current_epoch` reads. It is read under this watch's lock: the writer updates the
    /// state before it calls [`Self::invalidate`], so no change can fall in between.
    pub fn watch(
        &self,
        username: &str,
        current_epoch: impl FnOnce() -> Cursor,
    ) -> watch::Receiver<Cursor> {
        let mut by_user = self.by_user.lock().expect("credential watch lock");
        let current_epoch = current_epoch();
        let sender = by_user
            .entry(username.to_owned())
            .or_insert_with(|| watch::Sender::new(current_epoch));
        // Creating the sender with the current epoch, or correcting a stale one, never
        // wakes anybody: only a real change after this point does.
        sender.send_if_modified(|epoch| {
            let moved = *epoch != current_epoch;
            *epoch = current_epoch;
            moved
        });
        sender.subscribe()
    }

    /// How many streams of `username` are open (each holds one receiver).
    pub fn open_streams(&self, username: &str) -> usize {
        self.by_user
            .lock()
            .expect("credential watch lock")
            .get(username)
            .map_or(0, |sender| sender.receiver_count())
    }

    /// Tells `username`'s streams that their credential epoch is now `epoch`.
    pub fn invalidate(&self, username: &str, epoch: Cursor) {
        let mut by_user = self.by_user.lock().expect("credential watch lock");
        if let Some(sender) = by_user.get(username) {
            if sender.receiver_count() == 0 {
                by_user.remove(username);
            } else {
                sender.send_replace(epoch);
            }
        }
    }
}

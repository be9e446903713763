//! Projections: the log folded into what requests read.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use base64::Engine as _;
use hashbrown::HashTable;
use rkyv::rancor::Fallible;
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::{Archive, Archived, Deserialize, Place, Resolver, Serialize};

use crate::cursor::Cursor;

use super::idempotency::IdempotencyKeys;
use super::record::UserCreated;

/// The projections' hash map. Its keys (usernames, tenants, event names) are chosen by
/// clients, so the hasher is seeded at random per process (foldhash's `RandomState`: not
/// predictable from outside, so colliding keys cannot be precomputed); it is several times
/// faster than std's SipHash on short strings, which every insert and every replayed record
/// hashes two or three of.
pub type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// Everything the log says, folded: users by username, latest event per (tenant, name).
/// Checkpoints store it as it is (rkyv), so there is one shape of a user, not two.
#[derive(Debug, Clone, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct State {
    /// Users by username (usernames are unique across tenants).
    #[rkyv(with = UserList)]
    pub users: Users,
    /// Per tenant, the latest event of each event name, and the bytes of their data.
    #[rkyv(with = LatestMap)]
    pub latest: Latest,
    /// The cursor of the last record folded in (0 before any).
    pub cursor: Cursor,
    /// Recent `Idempotency-Key`s of inserts, per caller: a retry is answered, not appended.
    pub idempotency: IdempotencyKeys,
}

/// A user as the projection holds it. Every user is held once (in [`Users`]), so its size
/// is what a user costs: what a user rarely has is boxed apart ([`UserExtras`]), the tenant
/// is shared with the tenant's other users, and the password hash is kept as its parts.
#[derive(Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct User {
    /// Random UUID bytes.
    pub id: [u8; 16],
    /// Login name, unique across tenants (also what [`Users`] finds the user by).
    pub username: Box<str>,
    /// The tenant whose events the user reads and writes (one allocation per tenant).
    pub tenant: Arc<str>,
    /// The Argon2id hash of the password.
    pub password_hash: PasswordHash,
    /// TOTP secret bytes.
    pub totp_secret: Box<[u8]>,
    /// Whether login requires a TOTP code.
    pub two_factor: bool,
    /// Revoked users cannot log in or act.
    pub revoked: bool,
    /// Cursor of the last record that invalidated the user's tokens (creation, password or
    /// tenant change, revocation). A token carries the epoch it was issued in.
    pub credential_epoch: Cursor,
    /// Cursor of the last record that changed the user in any way.
    pub version: Cursor,
    /// When the user was created (its `UserCreated`), milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// When the last record that changed the user was written (as `version`), milliseconds
    /// since the Unix epoch.
    pub changed_ms: i64,
    /// TOTP step of the last accepted two-factor login code.
    pub last_login_step: u64,
    /// Step of the last used password-reset code.
    pub last_reset_step: u64,
    /// Email, scopes, data and a live reset code; `None` while the user has none of them.
    extras: Option<Box<UserExtras>>,
}

/// What most users do not have: a single pointer in the user while they have none of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct UserExtras {
    email: Option<String>,
    scopes: Option<Vec<String>>,
    data: Option<String>,
    reset_code: Option<ResetCode>,
}

impl User {
    /// A user as their `UserCreated` makes them, in `tenant`, at `cursor` and `at_ms`.
    pub fn created(created: &UserCreated, tenant: Arc<str>, cursor: Cursor, at_ms: i64) -> User {
        let mut user = User {
            id: created.id,
            username: created.username.as_str().into(),
            tenant,
            password_hash: PasswordHash::from_phc(&created.password_hash),
            totp_secret: created.totp_secret.as_slice().into(),
            two_factor: created.two_factor,
            revoked: false,
            credential_epoch: cursor,
            version: cursor,
            created_ms: at_ms,
            changed_ms: at_ms,
            last_login_step: 0,
            last_reset_step: 0,
            extras: None,
        };
        user.set_email(created.email.clone());
        user.set_scopes(created.scopes.clone());
        user.set_data(created.data.clone());
        user
    }

    /// The user's scopes, empty when none were set.
    pub fn scope_list(&self) -> &[String] {
        self.scopes().unwrap_or_default()
    }

    /// `resource:operation` pairs; `None` when never set (the API shows `null`).
    pub fn scopes(&self) -> Option<&[String]> {
        self.extras.as_ref()?.scopes.as_deref()
    }

    /// Optional email.
    pub fn email(&self) -> Option<&str> {
        self.extras.as_ref()?.email.as_deref()
    }

    /// Free JSON text.
    pub fn data(&self) -> Option<&str> {
        self.extras.as_ref()?.data.as_deref()
    }

    /// The live password-reset code, if the admin issued one that is not used or void yet.
    pub fn reset_code(&self) -> Option<&ResetCode> {
        self.extras.as_ref()?.reset_code.as_ref()
    }

    /// Sets the email (`None` clears it).
    pub fn set_email(&mut self, email: Option<String>) {
        self.change_extras(|extras| extras.email = email);
    }

    /// Sets the scopes (`None`: never set).
    pub fn set_scopes(&mut self, scopes: Option<Vec<String>>) {
        self.change_extras(|extras| extras.scopes = scopes);
    }

    /// Sets the data (`None` clears it).
    pub fn set_data(&mut self, data: Option<String>) {
        self.change_extras(|extras| extras.data = data);
    }

    /// Changes the live reset code.
    pub fn change_reset_code(&mut self, change: impl FnOnce(&mut Option<ResetCode>)) {
        self.change_extras(|extras| change(&mut extras.reset_code));
    }

    /// Applies `change` to the extras, dropping them once nothing is left in them: a user
    /// without extras never holds an allocation for them.
    fn change_extras(&mut self, change: impl FnOnce(&mut UserExtras)) {
        let mut extras = self.extras.take().unwrap_or_default();
        change(&mut extras);
        if *extras != UserExtras::default() {
            self.extras = Some(extras);
        }
    }

    /// The one credential rule: a credential issued in `epoch` (a JWT, a ticket, a stream, an
    /// insert decided on it) is still good — the user is not revoked and nothing has moved
    /// their credential epoch since (password, tenant, scopes, two-factor, revocation).
    pub fn accepts(&self, epoch: Cursor) -> bool {
        !self.revoked && self.credential_epoch == epoch
    }
}

/// An Argon2id password hash. The shape Broker writes (`$argon2id$v=19$m=…,t=…,p=…$`, a
/// 16-byte salt, a 32-byte hash) is kept as its parts: 64 bytes in the user instead of a
/// 97-byte string, its allocation and its pointer. Any other PHC string (other lengths or
/// parameters, a log written by another tool) is kept as it was written.
#[derive(Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum PasswordHash {
    /// The usual shape, as its parts.
    Argon2id {
        /// Memory cost, KiB.
        m: u32,
        /// Time cost, iterations.
        t: u32,
        /// Parallelism.
        p: u32,
        /// The salt.
        salt: [u8; 16],
        /// The hash.
        hash: [u8; 32],
    },
    /// Any other PHC string, as it was written.
    Phc(Box<str>),
}

impl PasswordHash {
    /// The hash a PHC string holds: its parts when [`PasswordHash::phc`] gives back exactly
    /// this string from them, else the string itself.
    pub fn from_phc(phc: &str) -> PasswordHash {
        Self::parts(phc)
            .filter(|parts| parts.phc() == phc)
            .unwrap_or_else(|| PasswordHash::Phc(phc.into()))
    }

    fn parts(phc: &str) -> Option<PasswordHash> {
        let rest = phc.strip_prefix("$argon2id$v=19$m=")?;
        let (m, rest) = rest.split_once(",t=")?;
        let (t, rest) = rest.split_once(",p=")?;
        let (p, rest) = rest.split_once('$')?;
        let (salt, hash) = rest.split_once('$')?;
        Some(PasswordHash::Argon2id {
            m: m.parse().ok()?,
            t: t.parse().ok()?,
            p: p.parse().ok()?,
            salt: PHC_BASE64.decode(salt).ok()?.try_into().ok()?,
            hash: PHC_BASE64.decode(hash).ok()?.try_into().ok()?,
        })
    }

    /// The PHC string, as it was written.
    pub fn phc(&self) -> Cow<'_, str> {
        match self {
            PasswordHash::Argon2id {
                m,
                t,
                p,
                salt,
                hash,
            } => format!(
                "$argon2id$v=19$m={m},t={t},p={p}${}${}",
                PHC_BASE64.encode(salt),
                PHC_BASE64.encode(hash)
            )
            .into(),
            PasswordHash::Phc(phc) => Cow::Borrowed(phc),
        }
    }
}

/// PHC strings' base64: the standard alphabet, no padding.
const PHC_BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

impl std::fmt::Debug for PasswordHash {
    // A hash never reaches a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The users, each held once: in a vector, found by username through a table of positions
/// (so no username is stored a second time as a key), with their tenants interned (one
/// `Arc<str>` per tenant, shared by its users). A vector grows by doubling, but the part of
/// it not written yet is never touched, so it costs no resident memory.
#[derive(Clone, Default)]
pub struct Users {
    list: Vec<User>,
    /// Positions in `list`, hashed by the username there.
    index: HashTable<u32>,
    hasher: foldhash::quality::RandomState,
    /// Every tenant some user is in, once.
    tenants: HashSet<Arc<str>, foldhash::quality::RandomState>,
    /// How many users' names have each look-alike key ([`super::lookalike`]), built when a
    /// new username is first decided (not at load: a key is ~1 µs for a non-ASCII name, and a
    /// restart should not pay it for every user) and kept up to date from then on.
    lookalikes: std::sync::OnceLock<HashMap<u64, u32>>,
    /// The same for the tenants' names (of the tenants users are in).
    tenant_lookalikes: std::sync::OnceLock<HashMap<u64, u32>>,
}

impl Users {
    /// How many users there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every user, in no particular order.
    pub fn iter(&self) -> std::slice::Iter<'_, User> {
        self.list.iter()
    }

    /// How many users have a name that reads as `username` (itself included).
    pub fn lookalikes(&self, username: &str) -> u32 {
        let counts = self.lookalikes.get_or_init(|| {
            let mut counts = HashMap::with_capacity(self.list.len());
            for user in &self.list {
                *counts
                    .entry(super::lookalike::key(&user.username))
                    .or_insert(0) += 1;
            }
            counts
        });
        counts
            .get(&super::lookalike::key(username))
            .copied()
            .unwrap_or(0)
    }

    /// Counts `username` in or out of the look-alike keys, if they were built.
    fn count_lookalike(&mut self, username: &str, added: bool) {
        let Some(counts) = self.lookalikes.get_mut() else {
            return;
        };
        let key = super::lookalike::key(username);
        if added {
            *counts.entry(key).or_insert(0) += 1;
        } else if let Some(n) = counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }

    fn position(&self, username: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(username);
        self.index
            .find(hash, |&at| &*self.list[at as usize].username == username)
            .map(|&at| at as usize)
    }

    /// The user called `username`.
    pub fn get(&self, username: &str) -> Option<&User> {
        self.position(username).map(|at| &self.list[at])
    }

    /// The user called `username`, to change (their username must stay).
    pub fn get_mut(&mut self, username: &str) -> Option<&mut User> {
        self.position(username).map(|at| &mut self.list[at])
    }

    /// Whether a user is called `username`.
    pub fn contains(&self, username: &str) -> bool {
        self.position(username).is_some()
    }

    /// Adds `user`, replacing one of the same name.
    pub fn insert(&mut self, mut user: User) {
        user.tenant = self.tenant(&user.tenant);
        if let Some(at) = self.position(&user.username) {
            let old = std::mem::replace(&mut self.list[at], user);
            self.release(old.tenant);
            return;
        }
        let at = u32::try_from(self.list.len()).expect("fewer than 2^32 users");
        let hash = self.hasher.hash_one(&*user.username);
        self.count_lookalike(&user.username, true);
        self.list.push(user);
        let (list, hasher) = (&self.list, &self.hasher);
        self.index.insert_unique(hash, at, |&at| {
            hasher.hash_one(&*list[at as usize].username)
        });
    }

    /// Removes the user called `username`; whether there was one.
    pub fn remove(&mut self, username: &str) -> bool {
        let hash = self.hasher.hash_one(username);
        let list = &self.list;
        let entry = self
            .index
            .find_entry(hash, |&at| &*list[at as usize].username == username);
        let Ok(entry) = entry else {
            return false;
        };
        let at = *entry.get() as usize;
        entry.remove();
        let user = self.list.swap_remove(at);
        self.count_lookalike(&user.username, false);
        // The last user moved into the hole: its position changes.
        if let Some(moved) = self.list.get(at) {
            let was = self.list.len() as u32;
            let hash = self.hasher.hash_one(&*moved.username);
            if let Some(slot) = self.index.find_mut(hash, |&p| p == was) {
                *slot = at as u32;
            }
        }
        self.release(user.tenant);
        true
    }

    /// The tenant called `name`, shared with its users if it has any.
    pub fn tenant(&mut self, name: &str) -> Arc<str> {
        match self.tenants.get(name) {
            Some(tenant) => Arc::clone(tenant),
            None => {
                let tenant: Arc<str> = Arc::from(name);
                self.tenants.insert(Arc::clone(&tenant));
                if let Some(counts) = self.tenant_lookalikes.get_mut() {
                    *counts.entry(super::lookalike::key(name)).or_insert(0) += 1;
                }
                tenant
            }
        }
    }

    /// Whether `name` is no tenant's yet but reads as one's ([`super::lookalike`]).
    pub fn tenant_taken_alike(&self, name: &str) -> bool {
        if self.tenants.contains(name) {
            return false;
        }
        let counts = self.tenant_lookalikes.get_or_init(|| {
            let mut counts = HashMap::with_capacity(self.tenants.len());
            for tenant in &self.tenants {
                *counts.entry(super::lookalike::key(tenant)).or_insert(0) += 1;
            }
            counts
        });
        counts.contains_key(&super::lookalike::key(name))
    }

    /// The tenant called `name`, if some user is in it.
    pub fn known_tenant(&self, name: &str) -> Option<Arc<str>> {
        self.tenants.get(name).cloned()
    }

    /// A user left `tenant` (moved or deleted): the tenant is forgotten with its last user.
    pub fn release(&mut self, tenant: Arc<str>) {
        // Held by the table and by `tenant` alone: no user is in it any more.
        if Arc::strong_count(&tenant) <= 2
            && self.tenants.remove(&*tenant)
            && let Some(counts) = self.tenant_lookalikes.get_mut()
        {
            let key = super::lookalike::key(&tenant);
            if let Some(n) = counts.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&key);
                }
            }
        }
    }

    fn from_list(list: Vec<User>) -> Users {
        let mut users = Users {
            list: Vec::with_capacity(list.len()),
            ..Users::default()
        };
        users.index.reserve(list.len(), |_| 0);
        for user in list {
            users.insert(user);
        }
        users
    }
}

impl PartialEq for Users {
    fn eq(&self, other: &Users) -> bool {
        self.len() == other.len() && self.iter().all(|u| other.get(&u.username) == Some(u))
    }
}

impl Eq for Users {}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Checkpoints store the users as a list; the table and the tenants are rebuilt on load.
pub struct UserList;

impl ArchiveWith<Users> for UserList {
    type Archived = ArchivedVec<ArchivedUser>;
    type Resolver = VecResolver;

    fn resolve_with(field: &Users, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<S> SerializeWith<Users, S> for UserList
where
    S: Fallible + Allocator + Writer + ?Sized,
    User: Serialize<S>,
{
    fn serialize_with(field: &Users, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::serialize_from_slice(&field.list, serializer)
    }
}

impl<D> DeserializeWith<ArchivedVec<ArchivedUser>, Users, D> for UserList
where
    D: Fallible + ?Sized,
    ArchivedUser: Deserialize<User, D>,
{
    fn deserialize_with(
        field: &ArchivedVec<ArchivedUser>,
        deserializer: &mut D,
    ) -> Result<Users, D::Error> {
        let list = field
            .iter()
            .map(|user| user.deserialize(deserializer))
            .collect::<Result<Vec<User>, D::Error>>()?;
        Ok(Users::from_list(list))
    }
}

/// Wrong codes after which a reset code is void.
pub const RESET_CODE_TRIES: u8 = 5;

/// A password-reset code the admin issued, as the projection keeps it (digest only).
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct ResetCode {
    /// Cursor of its `ResetCodeIssued` record: which code this is.
    pub issued: Cursor,
    /// SHA-256 of the code, bound to the username.
    pub code_hash: [u8; 32],
    /// When it stops working, milliseconds since the Unix epoch.
    pub expires_ms: i64,
    /// Wrong codes tried against it so far.
    pub failures: u8,
}

impl std::fmt::Debug for User {
    // The hash and the TOTP secret never reach a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("tenant", &self.tenant)
            .field("revoked", &self.revoked)
            .field("credential_epoch", &self.credential_epoch)
            .field("version", &self.version)
            .field("password_hash", &"***")
            .field("totp_secret", &"***")
            .finish_non_exhaustive()
    }
}

/// The latest event of one name in one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct LatestEvent {
    /// Its cursor (SSE `id:`).
    pub cursor: Cursor,
    /// UUIDv7 bytes.
    pub id: [u8; 16],
    /// Event name.
    pub event: Arc<str>,
    /// Compact JSON text.
    pub data: Arc<str>,
    /// When it was appended, milliseconds since the Unix epoch (the envelope's `at`).
    pub at_ms: i64,
    /// Who inserted it, `None` for the admin (the envelope's `by`).
    pub by: Option<Arc<str>>,
}

/// What a name of a tenant's latest events costs besides its data: the name itself (kept
/// as a key and in the event) and this much for its entry, so that 10,000 names of 255 bytes
/// with tiny data are not free (an attack review).
pub const NAME_ENTRY_BYTES: usize = 64;

/// What `event`, a name new to a tenant's latest events, adds to its bytes besides data.
pub fn name_cost(event: &str) -> usize {
    event.len() + NAME_ENTRY_BYTES
}

/// What a tenant's latest events hold, as `decide` bounds them for an insert of one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLatest {
    /// How many distinct event names the tenant has (`--max_event_names`).
    pub names: usize,
    /// The bytes of its latest events, all names together: their data and, per name,
    /// [`name_cost`] (`--max_tenant_snapshot_bytes`).
    pub bytes: usize,
    /// The length of the latest data of the inserted name, `None` if the name is new.
    pub replaced: Option<usize>,
}

/// Per tenant, the latest event of each name: what [`Latest`] reads as.
pub type LatestByTenant = Map<String, Map<String, LatestEvent>>;

/// The latest event of each name per tenant, with the bytes of data they hold per tenant.
///
/// Those bytes are what a tenant costs for good: compaction keeps one event per name, every
/// restart folds them back and every new stream of the tenant is sent them all. `decide`
/// bounds them (`--max_tenant_snapshot_bytes`), so every insert reads the sum: it is kept
/// here, not summed over the names each time. Read as the map it holds (it derefs to it);
/// changed only through [`Latest::fold`], which keeps the sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latest {
    events: LatestByTenant,
    /// Per tenant, the sum of its latest events' `data` lengths (no entry: 0).
    bytes: Map<String, usize>,
}

impl Latest {
    /// What `tenant`'s latest events hold, and the length of its latest `event`'s data.
    pub fn of(&self, tenant: &str, event: &str) -> TenantLatest {
        let names = self.events.get(tenant);
        TenantLatest {
            names: names.map_or(0, |names| names.len()),
            bytes: self.bytes.get(tenant).copied().unwrap_or(0),
            replaced: names
                .and_then(|names| names.get(event))
                .map(|latest| latest.data.len()),
        }
    }

    /// The length of the data of `tenant`'s latest `event`, if the tenant has that name.
    pub fn data_len(&self, tenant: &str, event: &str) -> Option<usize> {
        Some(self.events.get(tenant)?.get(event)?.data.len())
    }

    /// Changes the latest `event` of `tenant` with `replace`, or makes it with `make` when
    /// the tenant has no such name yet, and moves the tenant's byte count by the change.
    /// The tenant and name keys are allocated only when new.
    pub(super) fn fold(
        &mut self,
        tenant: &str,
        event: &str,
        replace: impl FnOnce(&mut LatestEvent),
        make: impl FnOnce() -> LatestEvent,
    ) {
        let (before, after) = match self
            .events
            .get_mut(tenant)
            .and_then(|names| names.get_mut(event))
        {
            Some(slot) => {
                let before = slot.data.len();
                replace(slot);
                (before, slot.data.len())
            }
            None => {
                let latest = make();
                let after = latest.data.len();
                let names = match self.events.get_mut(tenant) {
                    Some(names) => names,
                    None => self.events.entry(tenant.to_owned()).or_default(),
                };
                names.insert(event.to_owned(), latest);
                (0, after + name_cost(event))
            }
        };
        if before != after {
            match self.bytes.get_mut(tenant) {
                // `before` is one of the lengths the count holds: no underflow.
                Some(total) => *total = *total + after - before,
                None => {
                    self.bytes.insert(tenant.to_owned(), after);
                }
            }
        }
    }

    /// The latest events as a checkpoint held them, their byte counts summed again.
    fn from_events(events: LatestByTenant) -> Latest {
        let bytes = events
            .iter()
            .map(|(tenant, names)| {
                let sum = names
                    .iter()
                    .map(|(name, e)| e.data.len() + name_cost(name))
                    .sum();
                (tenant.clone(), sum)
            })
            .collect();
        Latest { events, bytes }
    }
}

impl std::ops::Deref for Latest {
    type Target = LatestByTenant;

    fn deref(&self) -> &LatestByTenant {
        &self.events
    }
}

impl<'a> IntoIterator for &'a Latest {
    type Item = (&'a String, &'a Map<String, LatestEvent>);
    type IntoIter = std::collections::hash_map::Iter<'a, String, Map<String, LatestEvent>>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.iter()
    }
}

/// Checkpoints store the latest events as the map they are (the shape they always had, so
/// earlier checkpoints still load); the byte counts are summed again on load.
pub struct LatestMap;

impl ArchiveWith<Latest> for LatestMap {
    type Archived = Archived<LatestByTenant>;
    type Resolver = Resolver<LatestByTenant>;

    fn resolve_with(field: &Latest, resolver: Self::Resolver, out: Place<Self::Archived>) {
        field.events.resolve(resolver, out);
    }
}

impl<S> SerializeWith<Latest, S> for LatestMap
where
    S: Fallible + ?Sized,
    LatestByTenant: Serialize<S>,
{
    fn serialize_with(field: &Latest, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        field.events.serialize(serializer)
    }
}

impl<D> DeserializeWith<Archived<LatestByTenant>, Latest, D> for LatestMap
where
    D: Fallible + ?Sized,
    Archived<LatestByTenant>: Deserialize<LatestByTenant, D>,
{
    fn deserialize_with(
        field: &Archived<LatestByTenant>,
        deserializer: &mut D,
    ) -> Result<Latest, D::Error> {
        field.deserialize(deserializer).map(Latest::from_events)
    }
}

impl State {
    /// The latest event of each name of `tenant`, oldest cursor first (the SSE snapshot).
    pub fn snapshot(&self, tenant: &str) -> Vec<LatestEvent> {
        let mut events: Vec<LatestEvent> = self
            .latest
            .get(tenant)
            .map(|by_name| by_name.values().cloned().collect())
            .unwrap_or_default();
        events.sort_by_key(|e| e.cursor);
        events
    }

    /// The user called `username`, if any.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::evolve;
    use crate::state::record::{Record, RecordKind, UserUpdated};

    fn created(cursor: Cursor, username: &str, tenant: &str, hash: &str) -> Record {
        Record {
            cursor,
            at_ms: 7,
            kind: RecordKind::UserCreated(UserCreated {
                id: [cursor as u8; 16],
                username: username.into(),
                tenant: tenant.into(),
                password_hash: hash.into(),
                email: cursor
                    .is_multiple_of(2)
                    .then(|| format!("{username}@example.com")),
                scopes: None,
                data: None,
                two_factor: false,
                totp_secret: vec![1; 20],
            }),
        }
    }

    fn record(cursor: Cursor, kind: RecordKind) -> Record {
        Record {
            cursor,
            at_ms: 8,
            kind,
        }
    }

    #[test]
    fn the_usual_argon2id_hash_is_kept_as_parts_and_given_back_as_written() {
        let phc = crate::auth::password::hash("correct horse").unwrap();
        let kept = PasswordHash::from_phc(&phc);
        assert!(matches!(kept, PasswordHash::Argon2id { .. }), "{phc}");
        assert_eq!(kept.phc(), phc);
        assert!(crate::auth::password::verify("correct horse", &kept.phc()));
        // Anything else is kept as it was written: other parameters' spelling, lengths,
        // algorithms, padding, or no PHC string at all.
        for other in [
            "h",
            "",
            "$argon2id$v=19$m=019456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$argon2id$v=19$m=19456,t=2,p=1,keyid=x$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        ] {
            let kept = PasswordHash::from_phc(other);
            assert_eq!(kept, PasswordHash::Phc(other.into()));
            assert_eq!(kept.phc(), other);
        }
        assert_eq!(format!("{kept:?}"), "***");
    }

    #[test]
    fn users_are_found_after_removals_move_others_and_tenants_are_shared_then_forgotten() {
        let mut state = State::default();
        for i in 0..100u64 {
            evolve(
                &mut state,
                &created(i + 1, &format!("u{i}"), &format!("t{}", i % 3), "h"),
            );
        }
        let mut cursor = 100;
        for i in (0..100u64).step_by(7) {
            cursor += 1;
            let username = format!("u{i}");
            evolve(
                &mut state,
                &record(cursor, RecordKind::UserDeleted { username }),
            );
        }
        for i in 0..100u64 {
            let user = state.users.get(&format!("u{i}"));
            assert_eq!(user.is_none(), i % 7 == 0, "u{i}");
            if let Some(user) = user {
                assert_eq!(*user.tenant, format!("t{}", i % 3));
                let first = state.users.get(&format!("u{}", i % 3 + 3)).unwrap();
                assert!(
                    Arc::ptr_eq(&user.tenant, &first.tenant),
                    "one Arc per tenant"
                );
            }
        }
        assert_eq!(state.users.len(), 100 - 15);
        // Everyone leaves t0 (moved or deleted): it is forgotten; t1 stays.
        for user in state
            .users
            .iter()
            .map(|u| u.username.to_string())
            .collect::<Vec<_>>()
        {
            cursor += 1;
            let kind = if user.ends_with('3') {
                RecordKind::UserDeleted { username: user }
            } else {
                RecordKind::UserUpdated(UserUpdated {
                    username: user,
                    tenant: Some("t1".into()),
                    ..UserUpdated::default()
                })
            };
            evolve(&mut state, &record(cursor, kind));
        }
        assert!(state.users.known_tenant("t0").is_none());
        assert!(state.users.known_tenant("t2").is_none());
        assert!(state.users.known_tenant("t1").is_some());
        // A move to an unknown user's tenant leaves no tenant behind.
        cursor += 1;
        let nobody = RecordKind::UserUpdated(UserUpdated {
            username: "nobody".into(),
            tenant: Some("t9".into()),
            ..UserUpdated::default()
        });
        evolve(&mut state, &record(cursor, nobody));
        assert!(state.users.known_tenant("t9").is_none());
    }

    #[test]
    fn a_checkpointed_state_reads_back_equal_with_its_tenants_shared() {
        let mut state = State::default();
        let phc = crate::auth::password::hash("pw").unwrap();
        for i in 0..50u64 {
            evolve(
                &mut state,
                &created(i + 1, &format!("u{i}"), &format!("t{}", i % 2), &phc),
            );
        }
        evolve(&mut state, &created(51, "odd", "t0", "not a phc string"));
        evolve(
            &mut state,
            &record(
                52,
                RecordKind::UserDeleted {
                    username: "u3".into(),
                },
            ),
        );
        let issued = RecordKind::ResetCodeIssued {
            username: "u4".into(),
            code_hash: [3; 32],
            expires_ms: 99,
        };
        evolve(&mut state, &record(53, issued));
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&state).unwrap();
        let back = rkyv::from_bytes::<State, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(back, state);
        assert_eq!(
            back.users.get("u4").unwrap().reset_code().unwrap().issued,
            53
        );
        assert_eq!(
            back.users.get("u1").unwrap().email(),
            Some("u1@example.com")
        );
        let (a, b) = (back.users.get("u0").unwrap(), back.users.get("u2").unwrap());
        assert!(Arc::ptr_eq(&a.tenant, &b.tenant));
        assert!(back.users.known_tenant("t1").is_some());
    }

    fn event(cursor: Cursor, tenant: &str, name: &str, len: usize) -> Record {
        record(
            cursor,
            RecordKind::EventInserted(crate::state::record::EventInserted {
                id: [cursor as u8; 16],
                tenant: tenant.into(),
                event: name.into(),
                data: "x".repeat(len),
                by: None,
                idempotency_key: None,
            }),
        )
    }

    #[test]
    fn a_tenants_data_bytes_follow_new_names_growth_and_replacement() {
        let mut state = State::default();
        let mut cursor = 0;
        let mut fold = |state: &mut State, tenant: &str, name: &str, len: usize| {
            cursor += 1;
            evolve(state, &event(cursor, tenant, name, len));
        };
        fold(&mut state, "t", "a", 100);
        fold(&mut state, "t", "b", 20);
        // Each name costs its length and NAME_ENTRY_BYTES besides its data.
        let name = 1 + NAME_ENTRY_BYTES;
        assert_eq!(state.latest.of("t", "").bytes, 120 + 2 * name);
        // Replaced by longer data, by shorter, by as long: counted once, as it is now.
        fold(&mut state, "t", "a", 250);
        assert_eq!(state.latest.of("t", "").bytes, 270 + 2 * name);
        fold(&mut state, "t", "a", 5);
        assert_eq!(state.latest.of("t", "").bytes, 25 + 2 * name);
        fold(&mut state, "t", "b", 20);
        assert_eq!(state.latest.of("t", "").bytes, 25 + 2 * name);
        assert_eq!(state.latest.of("t", "a").replaced, Some(5));
        assert_eq!(state.latest.of("t", "c").replaced, None);
        // Tenants are counted apart; a tenant with no event holds nothing.
        fold(&mut state, "u", "a", 7);
        assert_eq!(
            (
                state.latest.of("t", "").bytes,
                state.latest.of("u", "").bytes
            ),
            (25 + 2 * name, 7 + name)
        );
        assert_eq!(state.latest.of("nobody", "").bytes, 0);
        // Deleting a user leaves their tenant's events, and so its bytes.
        evolve(&mut state, &created(100, "bob", "t", "h"));
        let gone = RecordKind::UserDeleted {
            username: "bob".into(),
        };
        evolve(&mut state, &record(101, gone));
        assert_eq!(state.latest.of("t", "").bytes, 25 + 2 * name);
        let sum: usize = state.latest["t"]
            .iter()
            .map(|(n, e)| e.data.len() + name_cost(n))
            .sum();
        assert_eq!(
            sum,
            25 + 2 * name,
            "the count is the sum over the latest events"
        );
    }

    /// The latest events are stored in checkpoints as the map they always were: a checkpoint
    /// written before the byte counts existed loads, with its counts summed again.
    #[test]
    fn checkpoints_keep_the_shape_of_the_latest_events_and_their_counts_are_summed_on_load() {
        #[derive(Archive, Serialize)]
        struct Before {
            #[rkyv(with = UserList)]
            users: Users,
            latest: LatestByTenant,
            cursor: Cursor,
            idempotency: IdempotencyKeys,
        }
        let mut state = State::default();
        evolve(&mut state, &created(1, "ann", "t", "h"));
        for (cursor, tenant, name, len) in [(2, "t", "a", 30), (3, "t", "b", 4), (4, "u", "a", 9)] {
            evolve(&mut state, &event(cursor, tenant, name, len));
        }
        let before = Before {
            users: state.users.clone(),
            latest: state.latest.events.clone(),
            cursor: state.cursor,
            idempotency: state.idempotency.clone(),
        };
        let old = rkyv::to_bytes::<rkyv::rancor::Error>(&before).unwrap();
        let now = rkyv::to_bytes::<rkyv::rancor::Error>(&state).unwrap();
        assert_eq!(old.as_slice(), now.as_slice(), "the same bytes as before");
        let back = rkyv::from_bytes::<State, rkyv::rancor::Error>(&old).unwrap();
        assert_eq!(back, state);
        assert_eq!(
            (back.latest.of("t", "").bytes, back.latest.of("u", "").bytes),
            (34 + 2 * (1 + NAME_ENTRY_BYTES), 9 + 1 + NAME_ENTRY_BYTES)
        );
    }

    #[test]
    fn a_user_without_extras_holds_no_allocation_for_them() {
        let mut user = User::created(
            &match created(1, "bob", "t", "h").kind {
                RecordKind::UserCreated(u) => u,
                _ => unreachable!(),
            },
            Arc::from("t"),
            1,
            0,
        );
        assert!(user.extras.is_none());
        user.set_data(Some("1".into()));
        assert_eq!(user.data(), Some("1"));
        user.set_data(None);
        assert!(user.extras.is_none());
    }
}

//! Identity helpers with no routes and no state: passwords, tokens, credentials, codes, time.

pub mod clock;
pub mod credentials;
pub mod jwt;
pub mod password;
pub mod totp;

pub use clock::Clock;
pub use credentials::Credentials;

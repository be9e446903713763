//! Identity helpers with no routes and no state: passwords, tokens, credentials, codes, time.

pub mod biscuit;
pub mod clock;
pub mod credentials;
pub mod jwt;
pub mod password;
pub mod qr;
pub mod reset_code;
pub mod scopes;
pub mod strength;
pub mod throttle;
pub mod totp;

pub use clock::Clock;
pub use credentials::Credentials;

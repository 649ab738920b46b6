//! Talking to OCI / docker registries: references, credentials, and the
//! Distribution v2 client with `pull` and `push` on top of the content store.

pub mod auth;
pub mod blob_record;
pub mod client;
pub mod credentials;
pub mod error;
pub mod lazy;
mod parallel;
mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod tls;

pub use client::{Client, ClientOptions};
pub use error::RegistryError;
pub use progress::{Progress, TransferEvent};
pub use pull::{pull, PullOptions, Pulled};
pub use push::{push, PushOptions, Pushed};

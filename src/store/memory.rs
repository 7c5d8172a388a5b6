//! Tokens in memory only: for tests and for people who accept a fresh login
//! after every restart.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{StoreError, StoredToken, TokenStore};

#[derive(Default)]
pub struct MemoryStore {
    tokens: Mutex<HashMap<String, StoredToken>>,
}

impl TokenStore for MemoryStore {
    fn load(&self, provider: &str) -> Option<StoredToken> {
        self.tokens.lock().unwrap().get(provider).cloned()
    }

    fn save<'a>(
        &'a self,
        provider: &'a str,
        token: StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.tokens
            .lock()
            .unwrap()
            .insert(provider.to_string(), token);
        Box::pin(async { Ok(()) })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn pending_error(&self) -> Option<String> {
        None
    }

    fn describe(&self) -> String {
        "memory (tokens are lost on restart)".into()
    }
}

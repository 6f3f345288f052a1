//! Passwords as etcd keeps them: bcrypt hashes, made and checked on the
//! blocking pool so the async workers never stall on them. A user's checks
//! run one at a time, so a thousand wrong guesses at one user queue behind
//! each other and cost the machine one core at most, while other users'
//! logins go on; all checks together are bounded by the cores.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::error::MvccError;

/// Hashes and checks passwords with the bounds above.
pub(crate) struct Passwords {
    cost: u32,
    /// One permit per user being checked now; dropped when no one waits.
    per_user: Mutex<HashMap<String, Arc<Semaphore>>>,
    all: Semaphore,
}

impl Passwords {
    pub(crate) fn new(cost: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            cost,
            per_user: Mutex::new(HashMap::new()),
            all: Semaphore::new(cores),
        }
    }

    /// A new hash of `password`, at the configured cost.
    pub(crate) async fn hash(&self, password: String) -> Result<String, MvccError> {
        let _slot = self.all.acquire().await.map_err(|_| MvccError::Stopped)?;
        let cost = self.cost;
        let hashed = tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|error| MvccError::Password(format!("hashing: {error}")))?
            .map_err(|error| MvccError::Password(format!("hashing: {error}")))?;
        Ok(hashed)
    }

    /// Whether `password` matches `hashed`, `user`'s stored hash. A hash
    /// that is not bcrypt's matches nothing.
    pub(crate) async fn matches(
        &self,
        user: &str,
        password: String,
        hashed: Vec<u8>,
    ) -> Result<bool, MvccError> {
        let turn = self
            .per_user
            .lock()
            .entry(user.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let result = async {
            let _mine = turn.acquire().await.map_err(|_| MvccError::Stopped)?;
            let _slot = self.all.acquire().await.map_err(|_| MvccError::Stopped)?;
            tokio::task::spawn_blocking(move || {
                let Ok(hashed) = std::str::from_utf8(&hashed) else {
                    return false;
                };
                bcrypt::verify(password, hashed).unwrap_or(false)
            })
            .await
            .map_err(|error| MvccError::Password(format!("checking: {error}")))
        }
        .await;
        let mut per_user = self.per_user.lock();
        // The map's handle and this one: nobody else is waiting.
        if Arc::strong_count(&turn) <= 2 {
            per_user.remove(user);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hashed_password_matches_itself_and_nothing_else() {
        let passwords = Passwords::new(4);
        let hashed = passwords
            .hash("s3cret".into())
            .await
            .expect("the test's own input");
        assert!(!hashed.contains("s3cret"));
        let hashed = hashed.into_bytes();
        assert!(passwords
            .matches("alice", "s3cret".into(), hashed.clone())
            .await
            .expect("the test's own input"));
        assert!(!passwords
            .matches("alice", "guess".into(), hashed)
            .await
            .expect("the test's own input"));
        assert!(!passwords
            .matches("alice", "s3cret".into(), b"not bcrypt".to_vec())
            .await
            .expect("the test's own input"));
        assert!(passwords.per_user.lock().is_empty());
    }
}

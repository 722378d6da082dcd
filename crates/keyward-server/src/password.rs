//! Password hashing with Argon2id (RFC 9106), using the OWASP-recommended parameters
//! (19 MiB, 2 passes, 1 lane).
//!
//! Hashing runs on a small pool of its own threads, one per core, never on the request
//! workers. The pool bounds both the CPU and the memory a burst of logins can take:
//! each thread keeps one Argon2 work area and reuses it, so RSS grows by at most
//! cores × 19 MiB however many logins arrive at once (on the blocking pool, 32
//! concurrent logins grew the process to 2.7 GiB, which glibc then kept).

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use keyward_proto::Password;
use subtle::ConstantTimeEq as _;

/// A password-hashing failure.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Argon2 refused the input or parameters.
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    /// A stored hash is not a PHC string.
    #[error("stored password hash is malformed")]
    MalformedHash,
    /// The hashing thread stopped before answering.
    #[error("password hashing thread stopped")]
    Pool,
}

fn hasher() -> Argon2<'static> {
    // OWASP: m=19456 KiB, t=2, p=1. Params::new only fails on out-of-range values.
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The Argon2id parameters in force, for display (`m=…,t=…,p=…`).
pub fn parameters() -> String {
    let argon = hasher();
    let p = argon.params();
    format!(
        "argon2id m={}KiB t={} p={}",
        p.m_cost(),
        p.t_cost(),
        p.p_cost()
    )
}

/// Hashes a password into a PHC string (blocking; call from a blocking context).
pub fn hash_blocking(password: &Password) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    hasher()
        .hash_password(password.secret().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads' queue, started at first use.
fn pool() -> &'static mpsc::Sender<Job> {
    static POOL: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("keyward-argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = match receiver.lock() {
                            Ok(queue) => queue.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        sender
    })
}

/// Runs `work` on the hashing threads.
async fn on_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(work());
    });
    pool().send(job).map_err(|_| PasswordError::Pool)?;
    answered.await.map_err(|_| PasswordError::Pool)?
}

/// Hashes a password on the hashing threads.
pub async fn hash(password: Password) -> Result<String, PasswordError> {
    on_pool(move || hash_blocking(&password)).await
}

/// Checks a password against a stored hash on the hashing threads. With no stored hash
/// a dummy hash is checked, so that unknown users take as long as known ones.
pub async fn verify(password: Password, stored: Option<String>) -> Result<bool, PasswordError> {
    on_pool(move || {
        let (stored, real) = match stored {
            Some(hash) => (hash, true),
            None => (DUMMY_HASH.to_owned(), false),
        };
        let ok = verify_blocking(password.secret().as_bytes(), &stored)?;
        Ok(ok && real)
    })
    .await
}

/// Checks `password` against the PHC string `stored` with the parameters it names,
/// in this thread's reused work area.
fn verify_blocking(password: &[u8], stored: &str) -> Result<bool, PasswordError> {
    thread_local! {
        static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    }
    fn malformed<E>(_: E) -> PasswordError {
        PasswordError::MalformedHash
    }
    let parsed = PasswordHash::new(stored).map_err(malformed)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(malformed)?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(malformed)?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(malformed)?;
    let expected = parsed.hash.ok_or(PasswordError::MalformedHash)?;
    let mut salt_buf = [0_u8; 64];
    let salt = parsed
        .salt
        .ok_or(PasswordError::MalformedHash)?
        .decode_b64(&mut salt_buf)
        .map_err(malformed)?;
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0_u8; expected.len()];
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        memory.resize(blocks, Block::default());
        argon
            .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
            .map_err(|e| PasswordError::Hash(e.into()))
    })?;
    Ok(out.ct_eq(expected.as_bytes()).into())
}

/// An Argon2id hash of a random password, verified against when a user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2y+fhSnp6UXB5f1MZ9bcdBP+B2cWZBj1ZEN9D2cGQ7A";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let hash = hash(Password::new("correct horse")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            verify(Password::new("correct horse"), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!verify(Password::new("wrong"), Some(hash)).await.unwrap());
        assert!(!verify(Password::new("x"), None).await.unwrap());
        // A hash made with other parameters is checked with its own.
        let other = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 3, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::generate(&mut rand::rngs::OsRng))
        .unwrap()
        .to_string();
        assert!(
            verify(Password::new("pw"), Some(other.clone()))
                .await
                .unwrap()
        );
        assert!(!verify(Password::new("pq"), Some(other)).await.unwrap());
        assert!(
            verify(Password::new("x"), Some("garbage".into()))
                .await
                .is_err()
        );
    }
}

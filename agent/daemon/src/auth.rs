//! Bearer-token authentication with scopes, constant-time comparison and a failure penalty.
//!
//! Only SHA-256 hashes of secrets are held. Secrets are random 256-bit values, so a fast hash is
//! enough: there is nothing to brute-force that a slow hash would protect.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::config;
pub use tb_proto::auth::{Scope, generate_secret, hash_secret, hash_secret_hex};

/// Secrets longer than this are rejected before hashing.
const SECRET_LENGTH_MAX: usize = 512;
/// Addresses tracked by the failure penalty; beyond this the oldest window is dropped.
const PENALTY_ADDRESSES_MAX: usize = 4096;
const PENALTY_WINDOW: Duration = Duration::from_secs(60);

/// The secret of an `Authorization: Bearer <secret>` header value. The scheme is matched
/// case-insensitively (RFC 9110, section 11.1): `bearer` and `BEARER` are the same scheme.
fn bearer_secret(header: &str) -> Option<&str> {
    let (scheme, secret) = header.trim_start().split_once(' ')?;
    let secret = secret.trim();
    let valid = scheme.eq_ignore_ascii_case("bearer")
        && !secret.is_empty()
        && secret.len() <= SECRET_LENGTH_MAX;
    valid.then_some(secret)
}

struct TokenEntry {
    name: String,
    scopes: Vec<Scope>,
    hash: [u8; 32],
}

/// The outcome of checking an `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The token is known and holds the scope: the token's name.
    Allowed(String),
    /// No token, a malformed header, or an unknown token: 401.
    Unauthenticated,
    /// A known token without the scope: 403, with the token's name for the audit line.
    Forbidden(String),
    /// Too many failures from this address recently: 429.
    Throttled,
}

pub struct Authenticator {
    tokens: Vec<TokenEntry>,
    failures_per_window_max: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Authenticator {
    pub fn new(tokens: &[config::Token], failures_per_minute_max: u32) -> Authenticator {
        let tokens = tokens
            .iter()
            .map(|token| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&token.sha256, &mut hash).expect("validated in config");
                TokenEntry {
                    name: token.name.clone(),
                    scopes: token.scopes.clone(),
                    hash,
                }
            })
            .collect();
        Authenticator {
            tokens,
            failures_per_window_max: failures_per_minute_max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a request's `Authorization` header value for every one of `scopes`.
    ///
    /// A known token is always served, whatever else came from its address: throttling (429)
    /// applies only to failures. Otherwise anyone sharing the address (the orchestrator host, a
    /// NAT, the peers of a local cluster) could lock the legitimate clients out by sending bad
    /// tokens. Secrets are 256 random bits, so refusing a correct guess buys nothing; the
    /// throttle only keeps a flood of failures cheap to answer and out of the logs.
    pub fn check(&self, header: Option<&str>, remote: IpAddr, scopes: &[Scope]) -> Verdict {
        let Some(token) = header
            .and_then(bearer_secret)
            .and_then(|secret| self.find(secret))
        else {
            let throttled = self.throttled(remote);
            self.record_failure(remote);
            return if throttled {
                Verdict::Throttled
            } else {
                Verdict::Unauthenticated
            };
        };
        if scopes.iter().all(|scope| token.scopes.contains(scope)) {
            Verdict::Allowed(token.name.clone())
        } else {
            Verdict::Forbidden(token.name.clone())
        }
    }

    /// The configured token whose hash matches `secret`'s.
    fn find(&self, secret: &str) -> Option<&TokenEntry> {
        let presented = hash_secret(secret);
        // Compare against every token, without an early exit, so timing does not reveal which
        // token (or how many) matched.
        let mut matched: Option<&TokenEntry> = None;
        for token in &self.tokens {
            if bool::from(token.hash.ct_eq(&presented)) {
                matched = Some(token);
            }
        }
        matched
    }

    fn throttled(&self, remote: IpAddr) -> bool {
        let failures = self.failures.lock().expect("not poisoned");
        match failures.get(&remote) {
            Some((since, count)) => {
                since.elapsed() < PENALTY_WINDOW && *count >= self.failures_per_window_max
            }
            None => false,
        }
    }

    fn record_failure(&self, remote: IpAddr) {
        let mut failures = self.failures.lock().expect("not poisoned");
        if failures.len() >= PENALTY_ADDRESSES_MAX && !failures.contains_key(&remote) {
            failures.retain(|_, (since, _)| since.elapsed() < PENALTY_WINDOW);
            if failures.len() >= PENALTY_ADDRESSES_MAX {
                // Under a wide attack keep the table bounded; forgetting one window is the
                // lesser harm compared to unbounded memory.
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, (since, _))| *since)
                    .map(|(address, _)| *address);
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(remote).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= PENALTY_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        let tokens = vec![
            config::Token {
                name: "reader".into(),
                scopes: vec![Scope::Read],
                sha256: hash_secret_hex("read-secret"),
            },
            config::Token {
                name: "operator".into(),
                scopes: vec![Scope::Read, Scope::Control],
                sha256: hash_secret_hex("control-secret"),
            },
        ];
        Authenticator::new(&tokens, 3)
    }

    #[test]
    fn scopes_and_unknown_tokens() {
        let auth = authenticator();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            auth.check(Some("Bearer read-secret"), ip, &[Scope::Read]),
            Verdict::Allowed("reader".into())
        );
        assert_eq!(
            auth.check(Some("Bearer read-secret"), ip, &[Scope::Control]),
            Verdict::Forbidden("reader".into())
        );
        assert_eq!(
            auth.check(Some("Bearer control-secret"), ip, &[Scope::Control]),
            Verdict::Allowed("operator".into())
        );
        assert_eq!(
            auth.check(None, ip, &[Scope::Read]),
            Verdict::Unauthenticated
        );
        assert_eq!(
            auth.check(
                Some("Bearer control-secret"),
                ip,
                &[Scope::Control, Scope::Backup]
            ),
            Verdict::Forbidden("operator".into())
        );
        assert_eq!(
            auth.check(Some("Basic read-secret"), ip, &[Scope::Read]),
            Verdict::Unauthenticated
        );
    }

    #[test]
    fn failures_throttle_only_the_failing_address() {
        let auth = authenticator();
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let friend: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(
                auth.check(Some("Bearer wrong"), attacker, &[Scope::Read]),
                Verdict::Unauthenticated
            );
        }
        assert_eq!(
            auth.check(Some("Bearer wrong"), attacker, &[Scope::Read]),
            Verdict::Throttled
        );
        assert_eq!(
            auth.check(None, attacker, &[Scope::Read]),
            Verdict::Throttled
        );
        assert_eq!(
            auth.check(Some("Bearer read-secret"), friend, &[Scope::Read]),
            Verdict::Allowed("reader".into())
        );
    }

    #[test]
    fn a_valid_token_is_served_from_a_throttled_address() {
        let auth = authenticator();
        let shared: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10 {
            auth.check(Some("Bearer wrong"), shared, &[Scope::Read]);
        }
        assert_eq!(
            auth.check(Some("Bearer wrong"), shared, &[Scope::Read]),
            Verdict::Throttled
        );
        assert_eq!(
            auth.check(Some("Bearer read-secret"), shared, &[Scope::Read]),
            Verdict::Allowed("reader".into())
        );
        assert_eq!(
            auth.check(Some("Bearer read-secret"), shared, &[Scope::Control]),
            Verdict::Forbidden("reader".into())
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let auth = authenticator();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for header in [
            "bearer read-secret",
            "BEARER read-secret",
            "bEaReR read-secret",
            "Bearer   read-secret  ",
        ] {
            assert_eq!(
                auth.check(Some(header), ip, &[Scope::Read]),
                Verdict::Allowed("reader".into()),
                "{header}"
            );
        }
        for header in [
            "Bearerread-secret",
            "Bearer ",
            "Bearer",
            "Basic read-secret",
            "",
        ] {
            // A fresh authenticator each time: these failures would otherwise trip the throttle.
            assert_eq!(
                authenticator().check(Some(header), ip, &[Scope::Read]),
                Verdict::Unauthenticated,
                "{header}"
            );
        }
    }
}

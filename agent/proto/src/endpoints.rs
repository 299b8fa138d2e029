//! The agent's HTTP endpoints: method, path and the scopes a token needs. The daemon builds its
//! router from this table and tbctl its requests, so neither side types a route by hand, and the
//! OpenAPI contract test checks the table against docs/openapi.json.

use crate::auth::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Delete => "delete",
        }
    }
}

/// How long a request may take: reads answer from memory; operations may stop and start a
/// replica, copy or extract a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duration {
    Quick,
    Slow,
}

/// The `{action}` of `POST /v1/replica/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaAction {
    Start,
    Stop,
    Restart,
}

impl ReplicaAction {
    pub const ALL: [ReplicaAction; 3] = [
        ReplicaAction::Start,
        ReplicaAction::Stop,
        ReplicaAction::Restart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaAction::Start => "start",
            ReplicaAction::Stop => "stop",
            ReplicaAction::Restart => "restart",
        }
    }

    pub fn parse(text: &str) -> Option<ReplicaAction> {
        ReplicaAction::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    HealthLive,
    HealthReady,
    Status,
    Metrics,
    /// `{action}` is start, stop or restart.
    ReplicaControl,
    ReplicaRecover,
    BackupList,
    BackupCreate,
    BackupShow,
    BackupDelete,
    BackupVerify,
    BackupFile,
    BackupRestore,
    Job,
    /// The cluster-wide maintenance lease (`tb_proto::lease`).
    LeaseShow,
    LeaseInit,
    LeaseAcquire,
    LeaseRenew,
    LeaseRelease,
    LeaseBreak,
}

impl Endpoint {
    pub const ALL: [Endpoint; 20] = [
        Endpoint::HealthLive,
        Endpoint::HealthReady,
        Endpoint::Status,
        Endpoint::Metrics,
        Endpoint::ReplicaControl,
        Endpoint::ReplicaRecover,
        Endpoint::BackupList,
        Endpoint::BackupCreate,
        Endpoint::BackupShow,
        Endpoint::BackupDelete,
        Endpoint::BackupVerify,
        Endpoint::BackupFile,
        Endpoint::BackupRestore,
        Endpoint::Job,
        Endpoint::LeaseShow,
        Endpoint::LeaseInit,
        Endpoint::LeaseAcquire,
        Endpoint::LeaseRenew,
        Endpoint::LeaseRelease,
        Endpoint::LeaseBreak,
    ];

    pub fn method(self) -> Method {
        match self {
            Endpoint::HealthLive
            | Endpoint::HealthReady
            | Endpoint::Status
            | Endpoint::Metrics
            | Endpoint::BackupList
            | Endpoint::BackupShow
            | Endpoint::BackupFile
            | Endpoint::Job
            | Endpoint::LeaseShow => Method::Get,
            Endpoint::ReplicaControl
            | Endpoint::ReplicaRecover
            | Endpoint::BackupCreate
            | Endpoint::BackupVerify
            | Endpoint::BackupRestore
            | Endpoint::LeaseInit
            | Endpoint::LeaseAcquire
            | Endpoint::LeaseRenew
            | Endpoint::LeaseRelease
            | Endpoint::LeaseBreak => Method::Post,
            Endpoint::BackupDelete => Method::Delete,
        }
    }

    /// The path in axum's and OpenAPI's syntax: `{name}` is one path segment.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::HealthLive => "/v1/health/live",
            Endpoint::HealthReady => "/v1/health/ready",
            Endpoint::Status => "/v1/status",
            Endpoint::Metrics => "/metrics",
            Endpoint::ReplicaControl => "/v1/replica/{action}",
            Endpoint::ReplicaRecover => "/v1/replica/recover",
            Endpoint::BackupList | Endpoint::BackupCreate => "/v1/backups",
            Endpoint::BackupShow | Endpoint::BackupDelete => "/v1/backups/{id}",
            Endpoint::BackupVerify => "/v1/backups/{id}/verify",
            Endpoint::BackupFile => "/v1/backups/{id}/file",
            Endpoint::BackupRestore => "/v1/backups/{id}/restore",
            Endpoint::Job => "/v1/jobs/{id}",
            Endpoint::LeaseShow => "/v1/lease",
            Endpoint::LeaseInit => "/v1/lease/init",
            Endpoint::LeaseAcquire => "/v1/lease/acquire",
            Endpoint::LeaseRenew => "/v1/lease/renew",
            Endpoint::LeaseRelease => "/v1/lease/release",
            Endpoint::LeaseBreak => "/v1/lease/break",
        }
    }

    /// Every scope the token must hold; none for liveness, which says only that the agent runs
    /// (like Patroni's /liveness).
    pub fn scopes(self) -> &'static [Scope] {
        match self {
            Endpoint::HealthLive => &[],
            Endpoint::HealthReady
            | Endpoint::Status
            | Endpoint::Metrics
            | Endpoint::BackupList
            | Endpoint::BackupShow
            | Endpoint::Job
            | Endpoint::LeaseShow => &[Scope::Read],
            Endpoint::ReplicaControl
            | Endpoint::ReplicaRecover
            | Endpoint::LeaseInit
            | Endpoint::LeaseAcquire
            | Endpoint::LeaseRenew
            | Endpoint::LeaseRelease
            | Endpoint::LeaseBreak => &[Scope::Control],
            Endpoint::BackupCreate
            | Endpoint::BackupDelete
            | Endpoint::BackupVerify
            | Endpoint::BackupFile => &[Scope::Backup],
            // Restore replaces the live data file: it is both a control and a backup action.
            Endpoint::BackupRestore => &[Scope::Control, Scope::Backup],
        }
    }

    pub fn duration(self) -> Duration {
        match self {
            Endpoint::ReplicaControl
            | Endpoint::ReplicaRecover
            | Endpoint::BackupVerify
            | Endpoint::BackupFile
            | Endpoint::BackupRestore
            // They wait on the cluster (bounded by lease.request_timeout_ms, and acquire
            // retries briefly after an expiry).
            | Endpoint::LeaseInit
            | Endpoint::LeaseAcquire
            | Endpoint::LeaseRenew
            | Endpoint::LeaseRelease
            | Endpoint::LeaseBreak => Duration::Slow,
            _ => Duration::Quick,
        }
    }

    /// The path with its `{name}` segments filled from `parameters`, in order. Parameters are
    /// ids and action names; a character that would change the path's shape is a bug here.
    pub fn path_with(self, parameters: &[&str]) -> String {
        let mut path = String::new();
        let mut parameters = parameters.iter();
        for segment in self.path().split('/').skip(1) {
            path.push('/');
            if segment.starts_with('{') {
                let value = parameters.next().expect("a value for every path parameter");
                assert!(
                    !value.is_empty()
                        && value
                            .bytes()
                            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
                        && *value != "."
                        && *value != "..",
                    "path parameter {value:?} is not a plain segment"
                );
                path.push_str(value);
            } else {
                path.push_str(segment);
            }
        }
        assert!(
            parameters.next().is_none(),
            "more parameters than the path has"
        );
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_and_path_pairs_are_unique() {
        for (index, endpoint) in Endpoint::ALL.iter().enumerate() {
            for other in &Endpoint::ALL[index + 1..] {
                assert!(
                    (endpoint.method(), endpoint.path()) != (other.method(), other.path()),
                    "{endpoint:?} and {other:?} share a route"
                );
            }
        }
    }

    #[test]
    fn paths_fill_parameters_in_order() {
        assert_eq!(
            Endpoint::BackupFile.path_with(&["20261130T000000Z-r0-1"]),
            "/v1/backups/20261130T000000Z-r0-1/file"
        );
        assert_eq!(Endpoint::Status.path_with(&[]), "/v1/status");
    }

    #[test]
    #[should_panic(expected = "not a plain segment")]
    fn a_parameter_cannot_change_the_path() {
        Endpoint::BackupShow.path_with(&["../../etc"]);
    }
}

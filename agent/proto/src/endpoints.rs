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

    fn openapi() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openapi.json"))
            .expect("docs/openapi.json is JSON")
    }

    /// The concrete paths an endpoint serves, as docs/openapi.json lists them (`{action}` is
    /// one documented path per action).
    fn documented_paths(endpoint: Endpoint) -> Vec<String> {
        match endpoint {
            Endpoint::ReplicaControl => ReplicaAction::ALL
                .iter()
                .map(|action| endpoint.path_with(&[action.as_str()]))
                .collect(),
            _ => vec![endpoint.path().to_string()],
        }
    }

    /// The contract and the table agree: every route with its method and scopes, nothing more,
    /// and the statuses every authenticated route can answer.
    #[test]
    fn openapi_json_documents_exactly_the_endpoint_table() {
        let openapi = openapi();
        let mut from_table = std::collections::BTreeSet::new();
        for endpoint in Endpoint::ALL {
            for path in documented_paths(endpoint) {
                let method = endpoint.method().as_str();
                from_table.insert((path.clone(), method.to_string()));
                let operation = &openapi["paths"][&path][method];
                assert!(
                    operation.is_object(),
                    "{method} {path} ({endpoint:?}) is not in docs/openapi.json"
                );
                let mut documented: Vec<&str> = operation["security"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{method} {path}: no `security`"))
                    .iter()
                    .flat_map(|requirement| requirement["bearer"].as_array().into_iter().flatten())
                    .map(|scope| scope.as_str().expect("scope names are strings"))
                    .collect();
                let mut scopes: Vec<&str> = endpoint
                    .scopes()
                    .iter()
                    .map(|scope| scope.as_str())
                    .collect();
                documented.sort_unstable();
                scopes.sort_unstable();
                assert_eq!(documented, scopes, "{method} {path}: scopes");
                let responses = operation["responses"].as_object().expect("responses");
                let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
                // The authentication layer answers these on every route that needs a token.
                let authentication = ["401", "403", "429"];
                for status in authentication {
                    assert_eq!(
                        statuses.contains(&status),
                        !endpoint.scopes().is_empty(),
                        "{method} {path}: {status} documented iff the route needs a token"
                    );
                }
                // Readiness answers 503 with its report when a check fails.
                assert_eq!(
                    statuses.contains(&"503"),
                    endpoint == Endpoint::HealthReady,
                    "{method} {path}: 503"
                );
                // A body is read (and refused) by the same extractor everywhere.
                if operation.get("requestBody").is_some() {
                    for status in ["400", "413", "415", "422"] {
                        assert!(statuses.contains(&status), "{method} {path}: {status}");
                    }
                }
            }
        }
        for (path, operations) in openapi["paths"].as_object().expect("paths") {
            for method in operations.as_object().expect("operations").keys() {
                assert!(
                    from_table.contains(&(path.clone(), method.clone())),
                    "{method} {path} is in docs/openapi.json but not in the endpoint table"
                );
            }
        }
    }

    /// Every id pattern of the contract is the server's rule, written once in `crate::ids`.
    #[test]
    fn openapi_json_id_patterns_are_the_rules() {
        fn patterns<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(pattern) = map.get("pattern").and_then(|value| value.as_str()) {
                        found.push(pattern);
                    }
                    map.values().for_each(|value| patterns(value, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| patterns(v, found)),
                _ => {}
            }
        }
        let openapi = openapi();
        let parameters = &openapi["components"]["parameters"];
        assert_eq!(
            parameters["BackupId"]["schema"]["pattern"],
            crate::ids::BACKUP_ID_PATTERN
        );
        assert_eq!(
            parameters["JobId"]["schema"]["pattern"],
            crate::ids::JOB_ID_PATTERN
        );
        let mut found = Vec::new();
        patterns(&openapi, &mut found);
        for pattern in found {
            if pattern.contains("Z-r") {
                assert!(
                    [crate::ids::BACKUP_ID_PATTERN, crate::ids::JOB_ID_PATTERN].contains(&pattern),
                    "{pattern} is not the backup or job id rule"
                );
            } else if pattern.contains("[0-9a-f]{32}") {
                assert_eq!(pattern, crate::ids::LEASE_ID_PATTERN);
            }
        }
    }

    /// The patterns say what the validators do, on ids at and around every edge of the rules.
    #[test]
    fn id_patterns_and_validators_agree() {
        let matches = |pattern: &str, text: &str| {
            let schema = serde_json::json!({ "type": "string", "pattern": pattern });
            jsonschema::draft202012::new(&schema)
                .unwrap()
                .is_valid(&serde_json::json!(text))
        };
        let backup_ids = [
            "20261123T101500Z-r0-1a2b3c4d",
            "00000000T000000Z-r99999-00000000",
            "20261123T101500Z-r123456-1a2b3c4d",
            "20261123T101500Z-r-1a2b3c4d",
            "20261123T101500Z-r0-1A2B3C4D",
            "20261123T101500Z-r0-1a2b3c4",
            "20261123T101500Z-r0-1a2b3c4d0",
            "x20261123T101500Z-r0-1a2b3c4d",
            "20261123T101500Z-r0-1a2b3c4d\n",
            "20261123T101500Z-r٣-1a2b3c4d",
            "",
        ];
        for id in backup_ids {
            assert_eq!(
                matches(crate::ids::BACKUP_ID_PATTERN, id),
                crate::ids::validate_backup_id(id).is_ok(),
                "{id:?}"
            );
        }
        let lease_ids = [
            "0123456789abcdef0123456789abcdef".to_string(),
            "0".repeat(32),
            "f".repeat(32),
            "F".repeat(32),
            "0".repeat(31) + "1",
            "f".repeat(31) + "e",
            "0123456789ABCDEF0123456789abcdef".to_string(),
            "0".repeat(33),
            "0".repeat(31),
            String::new(),
        ];
        for id in lease_ids {
            assert_eq!(
                matches(crate::ids::LEASE_ID_PATTERN, &id),
                crate::lease::parse_id(&id).is_ok(),
                "{id:?}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "not a plain segment")]
    fn a_parameter_cannot_change_the_path() {
        Endpoint::BackupShow.path_with(&["../../etc"]);
    }
}
